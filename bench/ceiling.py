"""How much faster N processes can be than one on this machine, at best.

N independent processes each run the same pure-Python loop; the ceiling is
N x (one process's time alone) / (their slowest time together). On dedicated
cores it is N. On a shared virtual machine, where the vCPUs are time-sliced on
busy hosts, it is often much less, and no process scheme (encode_batch, MPI
ranks) can beat it: read the parallel ratios of bench/bpe.py and
bench/scaling.py against it. Measured in the same run as those ratios.

    python bench/ceiling.py            # 2 processes (or --nproc N), 3 rounds
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

from bench_quick import QUICK, quick_defaults  # noqa: E402  (bench/ is on the path: this script's folder)

LOOP = 100_000 if QUICK else 3_000_000


def _spin(_: object = None) -> float:
    start = time.perf_counter()
    total = 0
    for i in range(LOOP):
        total += i
    return time.perf_counter() - start


def parallel_ceiling(nproc: int = 2, rounds: int = 3) -> float:
    """Median over `rounds` of nproc x (one process alone) / (slowest of nproc together)."""
    ratios = []
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, nothing inherited
    with ctx.Pool(nproc) as pool:
        pool.map(_spin, range(nproc))  # start-up and warm-up, untimed
        for _ in range(rounds):
            alone = pool.apply(_spin)
            together = max(pool.map(_spin, range(nproc), chunksize=1))
            ratios.append(nproc * alone / together)
    return statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    quick_defaults(ap, rounds=1)
    args = ap.parse_args()
    print(f"{args.nproc} processes do {parallel_ceiling(args.nproc, args.rounds):.2f}x the work of one "
          f"in the same time here (pure Python; {args.nproc}x on dedicated cores)")


if __name__ == "__main__":
    main()
