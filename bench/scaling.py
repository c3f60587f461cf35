"""Data-parallel scaling on one machine: training tokens/s of one process (all cores for BLAS)
against `mpiexec -n 2` (one BLAS thread per rank), measured in turn in the same run.

Each measurement is a fresh process (or pair of processes) running the real training loop
(gpt.train.loop.Trainer: micro-batches, backward, the gradient Allreduce, clipping, AdamW)
on random token ids, for the `nano` and `mini` shapes of bench/gpt.py. Beside each ratio:
the most that many processes can do on this machine at that moment (bench/ceiling.py).

    python bench/scaling.py                      # nano and mini, 2 rounds each
    python bench/scaling.py --configs nano --rounds 3 --nproc 2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_quick import QUICK, quick_defaults  # bench/bench_quick.py: this script's folder is on the path
from ceiling import parallel_ceiling  # bench/ceiling.py

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {"nano": dict(batch=12, vocab=65, steps=40), "mini": dict(batch=8, vocab=50257, steps=6)}


def worker(config: str, steps: int) -> None:
    """Inside one measurement: train `steps` steps after a warm-up and print tokens/s (rank 0)."""
    sys.path[0] = str(ROOT)
    import numpy as np

    import tinytensor as tt
    from gpt import GPT, GPTConfig
    from gpt.train import distributed
    from gpt.train.loop import Batch, LoopConfig, Trainer
    from tinytensor import optim

    comm = distributed.connect()
    tt.tune_allocator()
    setup = SETUPS[config]
    cfg = GPTConfig.preset(config, vocab_size=setup["vocab"], bias=False)
    tt.manual_seed(0)
    model = GPT(cfg)
    rng = np.random.default_rng(0)

    class RandomTokens:
        def next_batch(self) -> Batch:
            ids = rng.integers(0, cfg.vocab_size, (setup["batch"], cfg.block_size + 1))
            return Batch((ids[:, :-1], ids[:, 1:]), n_targets=ids[:, 1:].size, n_tokens=ids[:, :-1].size)

        def loss(self, model, rows):
            return model(rows[0], targets=rows[1], reduction="sum")[1]

    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, 0.1), lr=1e-3)
    loop = LoopConfig(max_steps=10**9, lr=1e-3, min_lr=1e-4, warmup_steps=0, decay_steps=10**9, grad_clip=1.0)
    trainer = Trainer(model, opt, RandomTokens(), loop, comm=comm)
    for _ in range(3):
        trainer.train_step()
    comm.sum([0.0])                     # start together
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    elapsed = time.perf_counter() - start
    comm.print(json.dumps({"tokens_per_s": steps * setup["batch"] * cfg.block_size / elapsed}))


def measure(config: str, nproc: int, steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if nproc > 1:
        threads = str(max(1, (os.cpu_count() or 1) // nproc))
        env.update(OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    cmd = [sys.executable, __file__, "--worker", config, "--steps", str(steps)]
    if nproc > 1:
        cmd = ["mpiexec", "-n", str(nproc)] + cmd
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="measurements of each setting, taken in turn")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    quick_defaults(ap, configs=["nano"], rounds=1)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.steps)
        return
    if shutil.which("mpiexec") is None:
        sys.exit("needs mpiexec: pip install -e '.[mpi]'")
    print(f"{os.cpu_count()} cores; one process with {os.cpu_count()} BLAS threads against "
          f"{args.nproc} ranks with {max(1, (os.cpu_count() or 1) // args.nproc)} each")
    for config in args.configs:
        steps = 2 if QUICK else SETUPS[config]["steps"]
        one, many = [], []
        for _ in range(args.rounds):
            one.append(measure(config, 1, steps))
            many.append(measure(config, args.nproc, steps))
        a, b = statistics.median(one), statistics.median(many)
        print(f"{config:5s} 1 process {a:9,.0f} tokens/s (runs {', '.join(f'{x:,.0f}' for x in one)})   "
              f"{args.nproc} ranks {b:9,.0f} tokens/s (runs {', '.join(f'{x:,.0f}' for x in many)})   "
              f"ratio {b / a:.2f}x   (the most {args.nproc} processes can do here: "
              f"{parallel_ceiling(args.nproc):.2f}x, bench/ceiling.py)")


if __name__ == "__main__":
    main()
