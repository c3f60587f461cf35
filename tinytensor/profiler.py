"""Where a step's time goes: per op type, calls, forward and backward time, bytes allocated.

    import tinytensor as tt

    with tt.profile() as prof:
        loss = model(x, targets=y)[1]
        loss.backward()
        opt.step()
    print(prof)                      # the table, slowest op types first

While a profile is active, every node's forward and backward runs through it
and is timed (on a GPU after synchronising the device, so the time is the
kernels', not their launch). "Allocated" counts the bytes of the arrays an op
returns that are new memory, not views of its inputs (forward: its output;
backward: the gradients it returns). The optimizer's step and the autograd
engine's own work (walking the graph, adding gradients up) get rows of their
own, and the last line says how much of the wall time the rows cover: the
rest is Python between the ops (module calls, argument checks, data loading).

Profiling only times: results are the same with and without it. When no
profile is active, each node pays one test of a module global.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from . import tensor as _tensor
from .backend import get_array_module

ENGINE = "(autograd engine)"


@dataclass
class OpStats:
    """Totals for one op type over a profile."""

    name: str
    calls: int = 0
    forward_s: float = 0.0
    backward_s: float = 0.0
    forward_bytes: int = 0
    backward_bytes: int = 0

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s


class Profile:
    """Collects per-op-type timings while active; `table()` formats them."""

    def __init__(self) -> None:
        self.stats: dict[str, OpStats] = {}
        self.wall_s = 0.0
        self.steps = 1
        self._previous: Any = None
        self._started = 0.0
        self._inside_nodes_s = 0.0  # time spent in nodes' backward (and in timing them), to take out of the engine's

    def __enter__(self) -> "Profile":
        self._previous = _tensor._swap_profiler(self)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall_s += time.perf_counter() - self._started
        _tensor._swap_profiler(self._previous)

    def _row(self, name: str) -> OpStats:
        row = self.stats.get(name)
        if row is None:
            row = self.stats[name] = OpStats(name)
        return row

    # ---- called by Function.apply, Tensor.backward and the optimizers --------
    def forward(self, fn: Any, arrays: list, kwargs: dict) -> Any:
        t0 = time.perf_counter()
        out = fn.forward(*arrays, **kwargs)
        outs = out if type(out) is tuple else (out,)
        _synchronize(outs)
        row = self._row(type(fn).__name__)
        row.calls += 1
        row.forward_s += time.perf_counter() - t0
        row.forward_bytes += _new_bytes(outs, arrays)
        return out

    def backward(self, fn: Any, grad: Any) -> Any:
        t0 = time.perf_counter()
        grads = fn.backward(grad)
        outs = grads if type(grads) is tuple else (grads,)
        _synchronize(outs)
        row = self._row(type(fn).__name__)
        row.backward_s += time.perf_counter() - t0
        row.backward_bytes += _new_bytes(outs, grad if type(grad) is list else [grad])
        # the engine's row is the walk's time less this, bookkeeping included: it shows the engine's own work
        self._inside_nodes_s += time.perf_counter() - t0
        return grads

    @contextlib.contextmanager
    def region(self, name: str) -> Iterator[None]:
        """Time a block of work that is not a graph node (an optimizer step) as a row of its own."""
        t0 = time.perf_counter()
        yield
        row = self._row(name)
        row.calls += 1
        row.forward_s += time.perf_counter() - t0

    @contextlib.contextmanager
    def backward_pass(self) -> Iterator[None]:
        """Time one backward() walk; the engine's row gets the part not spent in the nodes' backward."""
        t0, nodes_before = time.perf_counter(), self._inside_nodes_s
        yield
        row = self._row(ENGINE)
        row.calls += 1
        row.backward_s += time.perf_counter() - t0 - (self._inside_nodes_s - nodes_before)

    # ---- reading it --------------------------------------------------------
    def rows(self) -> list[OpStats]:
        """One row per op type, slowest first."""
        return sorted(self.stats.values(), key=lambda r: r.total_s, reverse=True)

    def table(self, limit: int | None = None) -> str:
        """The rows as text: times in ms, sizes in MB, per step when the profile
        covered several (see `profile_steps`)."""
        per = self.steps
        rows = self.rows()
        covered = sum(r.total_s for r in rows)
        unit = "per step" if per > 1 else "total"
        lines = [f"{'op (' + unit + ')':28} {'calls':>6} {'forward ms':>11} {'backward ms':>12} {'total ms':>9} "
                 f"{'share':>6} {'fwd MB':>8} {'bwd MB':>8}"]
        for r in rows[:limit]:
            lines.append(f"{r.name:28} {_count(r.calls / per):>6} {r.forward_s * 1e3 / per:11.2f} "
                         f"{r.backward_s * 1e3 / per:12.2f} {r.total_s * 1e3 / per:9.2f} "
                         f"{r.total_s / max(covered, 1e-12):6.1%} {r.forward_bytes / 1e6 / per:8.2f} "
                         f"{r.backward_bytes / 1e6 / per:8.2f}")
        if limit is not None and len(rows) > limit:
            lines.append(f"... {len(rows) - limit} more op types")
        wall = self.wall_s / per
        lines.append(f"ops, engine and optimizer: {covered * 1e3 / per:.2f} ms of {wall * 1e3:.2f} ms wall "
                     f"({1 - covered / max(self.wall_s, 1e-12):.1%} elsewhere: Python between the ops, data)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def profile() -> Profile:
    """A profiler to use as `with tt.profile() as prof: ...`; then `print(prof)`."""
    return Profile()


def profile_steps(step: Callable[[], Any], n: int, warmup: int = 1, file: Any = None) -> Profile:
    """Run `step()` (one training step: forward, backward, optimizer) `warmup`
    times unprofiled, then `n` times under a profile; print the table, per step,
    to `file` (stdout by default) and return the profile."""
    if n < 1:
        raise ValueError(f"profile_steps needs n >= 1 steps to profile, got {n}")
    for _ in range(warmup):
        step()
    with profile() as prof:
        for _ in range(n):
            step()
    prof.steps = n
    print(f"profile of {n} step{'s' if n > 1 else ''} (after {warmup} unprofiled):", file=file or sys.stdout)
    print(prof.table(), file=file or sys.stdout)
    return prof


def region(name: str) -> Any:
    """The active profile's region(name), or a no-op context when none is active."""
    active = _tensor._profiler
    return contextlib.nullcontext() if active is None else active.region(name)


def _root(a: Any) -> Any:
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


def _new_bytes(arrays: tuple, sources: list) -> int:
    """Bytes of the arrays that are new memory, not views of `sources`."""
    own = {id(_root(s)) for s in sources if s is not None}
    return sum(a.nbytes for a in arrays if a is not None and hasattr(a, "nbytes") and id(_root(a)) not in own)


def _synchronize(arrays: tuple) -> None:
    """Wait for the GPU to finish (CuPy runs kernels asynchronously); nothing on the CPU."""
    for a in arrays:
        if a is not None:
            xp = get_array_module(a)
            if xp.__name__ == "cupy":
                xp.cuda.get_current_stream().synchronize()
            return


def _count(x: float) -> str:
    return f"{x:.0f}" if x == int(x) else f"{x:.1f}"
