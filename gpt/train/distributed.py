"""Data-parallel training over MPI: `mpiexec -n N python train.py ...`, on one machine or many.

Every process (a "rank") holds the whole model and takes the same steps. Each
step's batch is drawn whole on every rank, and rank r computes the gradient of
its own contiguous slice of rows (see loop.Batch.rows); one `Allreduce` over a
flat buffer adds the gradients of all ranks, so every rank then holds the
gradient of the whole batch and applies the same optimizer step. The loop
divides each rank's summed loss by the whole batch's target count, so the sum
over ranks is exactly the batch mean a single process computes.

    connect()            the Comm of this run: SingleProcess, or MPIComm under mpiexec
    Comm                 rank, size, sum(values), sum_gradients(params), gather_json, broadcast_json,
                         first_on_rank_0, print (on rank 0 only)
    check_divides(n)     a batch size must split evenly over the ranks
    on_device(device)    with CuPy, rank r uses GPU r modulo the GPUs present
    fail(comm, message)  print an error once and end every rank
    seed_per_rank(...)   each rank's own dropout stream

Rank 0 alone writes files and prints; the others read what it wrote (--out
must be on a filesystem every rank sees). mpi4py and an MPI library come
with `pip install -e '.[mpi]'` (mpich's wheel, which brings `mpiexec`).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Iterable, Protocol

import numpy as np
from tqdm import tqdm

from tinytensor import Tensor
from tinytensor.backend import cuda_is_available, get_array_module, to_device
from tinytensor.random import set_rng_state

# the variables an MPI launcher sets to the number of ranks (MPICH / Intel MPI, Open MPI, PMIx)
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
# how many threads BLAS uses: train.py gives each rank its share of the cores before NumPy loads
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def launched_size() -> int:
    """How many ranks the MPI launcher started (1 when not launched by mpiexec)."""
    for name in _SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


class Comm(Protocol):
    """The processes of a data-parallel run, as the training loop sees them."""
    rank: int
    size: int

    def sum(self, values: Iterable[float]) -> np.ndarray:
        """The element-wise sum of `values` over all processes (float64)."""

    def sum_gradients(self, params: list[Tensor]) -> None:
        """Replace every gradient by its sum over all processes, in place."""

    def gather_json(self, value: Any) -> list[Any] | None:
        """Every process's JSON-able value, as a list on rank 0 (None elsewhere)."""

    def broadcast_json(self, value: Any) -> Any:
        """Rank 0's JSON-able value, on every process."""

    def first_on_rank_0(self, work: Callable[[], Any]) -> Any:
        """work() on rank 0, then on the others (which find what rank 0 wrote)."""

    def print(self, text: str) -> None:
        """Print on rank 0 only (llm.c's print0), between a progress bar's redraws."""


class SingleProcess:
    """The Comm of a run in one process: nothing to add up."""
    rank, size = 0, 1

    def sum(self, values: Iterable[float]) -> np.ndarray:
        return np.asarray(list(values), dtype=np.float64)

    def sum_gradients(self, params: list[Tensor]) -> None:
        pass

    def gather_json(self, value: Any) -> list[Any]:
        return [value]

    def broadcast_json(self, value: Any) -> Any:
        return value

    def first_on_rank_0(self, work: Callable[[], Any]) -> Any:
        return work()

    def print(self, text: str) -> None:
        tqdm.write(text)


class MPIComm:
    """The ranks of an MPI job, as the training loop sees them."""

    def __init__(self, comm: Any):
        from mpi4py import MPI

        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._flat: np.ndarray | None = None

    def sum(self, values: Iterable[float]) -> np.ndarray:
        buf = np.asarray(list(values), dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def sum_gradients(self, params: list[Tensor]) -> None:
        """Add every gradient over the ranks in place, with one Allreduce. A gradient no
        rank produced stays None; one that only some ranks produced counts as zero there."""
        has = self.sum(float(p.grad is not None) for p in params)
        live = [p for p, n in zip(params, has) if n > 0]
        if not live:
            return
        for p in live:
            if p.grad is None:
                p.grad = get_array_module(p.data).zeros_like(p.data)
        grads = [p.grad for p in live]
        flat = _shared_flat_buffer(grads)            # the optimizer keeps them in one array: sum it in place
        packed = flat is None
        if packed:                                   # else: one copy in, one Allreduce, one copy out
            flat = self._packed(grads)
        if get_array_module(flat) is np:             # host memory: MPI adds it up in place
            self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        else:                                        # GPU memory: one copy to the host and one back
            host = to_device(flat, "cpu")
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
            flat[...] = get_array_module(flat).asarray(host)
        if packed:
            start = 0
            for g in grads:
                g[...] = flat[start:start + g.size].reshape(g.shape)
                start += g.size

    def _packed(self, grads: list[Any]) -> Any:
        """The gradients side by side in one 1-D array on their device (all on one device,
        the model's). On the host the buffer is allocated once and reused; on a GPU it
        is one concatenation, so the host sees a single transfer, not one per gradient."""
        xp = get_array_module(grads[0])
        if xp is not np:
            return xp.concatenate([g.ravel() for g in grads])
        size, dtype = sum(g.size for g in grads), np.dtype(grads[0].dtype)
        if self._flat is None or self._flat.size != size or self._flat.dtype != dtype:
            self._flat = np.empty(size, dtype=dtype)
        start = 0
        for g in grads:
            self._flat[start:start + g.size] = g.ravel()
            start += g.size
        return self._flat

    def gather_json(self, value: Any) -> list[Any] | None:
        """Every rank's JSON-able `value`, as a list on rank 0 (None elsewhere); sent as JSON text."""
        texts = self.comm.gather(json.dumps(value), root=0)
        return [json.loads(t) for t in texts] if self.rank == 0 else None

    def broadcast_json(self, value: Any) -> Any:
        """Rank 0's JSON-able `value`, on every rank."""
        return json.loads(self.comm.bcast(json.dumps(value) if self.rank == 0 else None, root=0))

    def first_on_rank_0(self, work: Callable[[], Any]) -> Any:
        if self.rank == 0:
            result = work()
            self.comm.Barrier()
            return result
        self.comm.Barrier()
        return work()

    def print(self, text: str) -> None:
        if self.rank == 0:
            tqdm.write(text)

    def hosts(self) -> list[str]:
        return sorted(set(self.comm.allgather(self.MPI.Get_processor_name())))


def _shared_flat_buffer(grads: list[Any]) -> Any | None:
    """The one contiguous array all `grads` are consecutive views of, if there is one."""
    base = grads[0].base
    if base is None or get_array_module(base) is not get_array_module(grads[0]):
        return None
    if base.ndim != 1 or not base.flags.c_contiguous:
        return None
    if base.size != sum(g.size for g in grads) or any(g.base is not base for g in grads):
        return None
    return base


def connect() -> Comm:
    """SingleProcess outside mpiexec (or with one rank); the MPI world under it."""
    if launched_size() <= 1:
        return SingleProcess()
    try:
        from mpi4py import MPI
    except ImportError:
        raise SystemExit("error: train.py was started by mpiexec with several ranks, but mpi4py is not installed: "
                         "pip install -e '.[mpi]'") from None
    return MPIComm(MPI.COMM_WORLD)


def check_divides(n: int, comm: Comm, flag: str = "--batch-size") -> None:
    if n % comm.size:
        raise ValueError(f"{flag} {n} does not split evenly over {comm.size} processes: give a multiple of "
                         f"{comm.size} (it is the whole step's batch, shared out between the ranks)")


def check_device_ready(device: str, flag: str = "--device") -> None:
    """Before any work: --device cuda needs CuPy and a GPU it sees; ValueError naming the flag and the fix."""
    if device == "cuda" and not cuda_is_available():
        try:
            import cupy  # noqa: F401
            problem = "CuPy sees no CUDA GPU on this machine"
        except ImportError:
            problem = "CuPy is not installed"
        raise ValueError(f"{flag} cuda needs CuPy and a CUDA GPU, and {problem}: pip install 'cupy-cuda12x' "
                         f"(the build matching your CUDA), or use {flag} cpu")


def on_device(device: str, comm: Comm) -> None:
    """With several ranks on CUDA, rank r works on GPU r modulo the GPUs this machine has
    (and --device cuda without CuPy or a GPU is an error naming the flag)."""
    check_device_ready(device)
    if device == "cuda" and comm.size > 1:
        import cupy

        cupy.cuda.Device(comm.rank % cupy.cuda.runtime.getDeviceCount()).use()


def layout(comm: Comm) -> str:
    """One line: ranks, BLAS threads per rank, hosts."""
    if not isinstance(comm, MPIComm):
        return ""
    threads = next((os.environ[v] for v in BLAS_THREAD_VARIABLES if v in os.environ), "all cores")
    hosts = comm.hosts()
    return (f"data-parallel: {comm.size} ranks, {threads} BLAS thread(s) each, on {len(hosts)} host(s): "
            f"{', '.join(hosts)}")


def fail(comm: Comm, message: str) -> None:
    """End every rank after an error, printing it once. Rank 0 prints and aborts at once;
    another rank waits a moment first, so an error every rank hit is printed by rank 0 alone,
    while an error of its own is still printed before the job ends."""
    if isinstance(comm, MPIComm):
        if comm.rank != 0:
            time.sleep(2.0)
            message = f"(rank {comm.rank}) {message}"
        print(message, file=sys.stderr, flush=True)
        time.sleep(0.5)                     # mpiexec forwards output on its own time: let it arrive first
        comm.comm.Abort(1)
        os._exit(1)                         # in case Abort returns before the launcher ends this process
    sys.exit(message)


def seed_per_rank(seed: int, comm: Comm, step: int = 0) -> None:
    """Rank r > 0 draws dropout from a stream of its own (seeded by seed, rank and step):
    the same stream on every rank would drop the same units in every rank's rows.
    Rank 0 keeps the stream a single process uses."""
    if comm.rank > 0:
        set_rng_state(np.random.default_rng([seed, comm.rank, step]).bit_generator.state)
