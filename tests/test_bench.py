"""Every bench script runs in its quick mode (BENCH_QUICK=1: a tiny configuration of the same
code, seconds, no ../shared, no torch), so that a moved module or a renamed flag breaks a test
rather than a benchmark nobody ran. Scripts are found by glob: a new one is run too."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("bench/*.py"), *ROOT.glob("bench/*.sh")])
# the only scripts not run, each with its reason
NOT_RUN = {
    "torch_gpt.py": "a module that bench/gpt.py imports when torch is installed (it imports torch), not a script",
    "bench_quick.py": "the quick mode's helper module, not a benchmark",
    "timing.py": "the scripts' shared timing helper module, not a benchmark",
    "peak_memory.py": "the process-tree memory helper of prepare.py and test_prepare, not a benchmark",
    "gpu_check.sh": "tests/test_gpu_check.py runs it in its quick mode (its test stages run pytest, which would "
                    "run this test again)",
}
NEEDS_MPIEXEC = {"scaling.py"}


def test_the_glob_finds_the_bench_scripts():
    assert {"gpt.py", "finetune_spam.sh"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_the_bench_script_runs_in_quick_mode(script, tmp_path):
    if script.name in NOT_RUN:
        pytest.skip(NOT_RUN[script.name])
    if script.name in NEEDS_MPIEXEC and shutil.which("mpiexec") is None:
        pytest.skip("needs mpiexec (pip install -e '.[mpi]')")
    env = {**os.environ, "BENCH_QUICK": "1", "OUT": str(tmp_path / "out"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = ["bash", str(script)] if script.suffix == ".sh" else [sys.executable, str(script)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, f"{script.name} failed in quick mode:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{script.name} printed no figure"
    assert "Traceback" not in done.stderr
