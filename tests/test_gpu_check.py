"""bench/gpu_check.sh, the one call a lent GPU gets, runs end to end on a CPU in its quick mode: with the
strict CuPy stand-in when ../shared has it (every stage then runs the cuda path), without it the cuda
stages say why they are skipped. So the script cannot rot between the rare runs on a real GPU."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("device", "cuda-tests", "suite", "train", "mpi", "bench")


def test_gpu_check_runs_every_stage_in_quick_mode(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "BENCH_QUICK": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    rows = {line.split()[0]: line for line in summary[1:] if line.split() and line.split()[0] in STAGES}
    assert set(rows) == set(STAGES), summary
    for name, line in rows.items():
        status = line.split()[1]
        assert status in ("ok", "skipped"), f"stage {name}: {line}\n" + (tmp_path / f"{name}.log").read_text()[-3000:]
    assert rows["bench"].split()[1] == "ok"
    stand_in = (ROOT.parent / "shared" / "tools" / "strict-cupy").is_dir()
    if stand_in:   # the cuda path itself ran: tests, training with a resume, the bench on "cuda"
        for name in ("cuda-tests", "train", "bench"):
            assert rows[name].split()[1] == "ok", rows[name]
        assert "train + resume on cuda: ok" in (tmp_path / "train.log").read_text()
    # the device runner brings back at most eight files
    assert len(list(tmp_path.iterdir())) <= 8
