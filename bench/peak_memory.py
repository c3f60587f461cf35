"""The peak resident memory of a command and all the processes it starts, polled from
/proc (Linux): bench/prepare.py reports it, tests/test_prepare.py bounds it.

    seconds, returncode, peak_bytes = run_watched(cmd, cwd=ROOT)
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 for one that has gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(status.split("VmRSS:")[1].split()[0]) * 1024
            todo += [int(c) for t in os.listdir(f"/proc/{p}/task")
                     for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue   # it ended while being read, or is a zombie without VmRSS
    return total


def run_watched(cmd: list[str], cwd: Path, every: float = 0.05) -> tuple[float, int, int]:
    """(seconds, exit status, peak resident bytes of the process tree) of `cmd`, run with
    cwd on PYTHONPATH so that it imports this checkout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, "PYTHONPATH": str(cwd)})
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(every)
    return time.perf_counter() - start, proc.returncode, peak
