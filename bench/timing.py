"""Timing shared by the bench scripts: each callable's median, taken in turns."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved_medians(fns: list[Callable[[], object]], reps: int, block: int = 5) -> list[float]:
    """Median seconds of each callable over `reps` runs, timed in turn in blocks of `block` runs.

    Blocks rather than single runs: PyTorch's OpenMP threads keep spinning for a
    while after each call, which would slow down whatever ran right after them.
    Each block starts with one untimed run.
    """
    times: list[list[float]] = [[] for _ in fns]
    while len(times[0]) < reps:
        for fn, ts in zip(fns, times):
            fn()
            for _ in range(min(block, reps - len(ts))):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]
