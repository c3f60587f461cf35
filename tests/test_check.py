"""python -m tinytensor check: every op has a check, every check passes, and a wrong backward fails."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import tinytensor as tt
from tinytensor import check, functional, ops
from tinytensor.tensor import Function

ROOT = Path(__file__).resolve().parents[1]


class Doubled(Function):
    """y = x, with a backward that is wrong by a factor of 2."""

    def forward(self, x):
        return x.copy()

    def backward(self, g):
        return 2 * g


BROKEN = check.OpCheck("Doubled", lambda x: Doubled.apply(x), [[(3,)]])


def test_every_function_class_has_a_check():
    classes = {name for module in (ops, functional) for name, obj in vars(module).items()
               if inspect.isclass(obj) and issubclass(obj, Function) and obj is not Function}
    assert len(classes) > 35
    checked = {c.name.split(" ")[0] for c in check.CHECKS}
    assert classes - checked == set()


def test_every_check_passes_and_the_table_names_each_op(device):
    lines = []
    assert check.report(check.CHECKS, device, out=lines.append)
    assert lines[0].startswith(f"finite-difference check of {len(check.CHECKS)} ops on {device}, float64")
    assert len(lines) == len(check.CHECKS) + 3
    for c, line in zip(check.CHECKS, lines[2:]):
        assert line.startswith(c.name) and line.endswith("  ok")
    assert lines[-1].startswith(f"{len(check.CHECKS)} of {len(check.CHECKS)} passed")


def test_a_wrong_backward_fails_and_a_crash_is_reported():
    bad = check.run_check(BROKEN)
    assert not bad.passed and bad.error > 0.3               # 2g against g
    crash = check.run_check(check.OpCheck("Crash", lambda x: x @ x, [[(2, 3)]]))
    assert not crash.passed and "matmul shape mismatch" in crash.problem
    lines = []
    assert not check.report([BROKEN], out=lines.append)
    assert lines[2].endswith("FAIL") and lines[-1].endswith("FAILED: Doubled")


def test_checks_leave_the_seeded_generator_alone():
    tt.manual_seed(5)
    state = tt.get_rng_state()
    check.run_check(next(c for c in check.CHECKS if c.name == "DropoutFunction"))
    assert tt.get_rng_state() == state


def cli(*args, cwd=ROOT):
    # this checkout's tinytensor, cwd's modules, and what the caller had (a CuPy stand-in, say)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "tinytensor", "check", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_checks_every_op_on_each_device(device):
    done = cli("--device", device)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"on {device}, float64" in done.stdout
    assert f"{len(check.CHECKS)} of {len(check.CHECKS)} passed" in done.stdout


def test_cli_exit_codes_and_an_op_of_your_own(tmp_path):
    ok = cli("--only", "softmax")
    assert ok.returncode == 0, ok.stderr
    assert "SoftmaxFunction" in ok.stdout and "LogSoftmaxFunction" in ok.stdout and "2 of 2 passed" in ok.stdout
    (tmp_path / "my_ops.py").write_text(
        "from tinytensor import Function\n"
        "from tinytensor.check import OpCheck\n"
        "class Doubled(Function):\n"
        "    def forward(self, x):\n"
        "        return x.copy()\n"
        "    def backward(self, g):\n"
        "        return 2 * g\n"
        "CHECKS = [OpCheck('Doubled', Doubled.apply, [[(2, 2)]])]\n")
    failed = cli("--add", "my_ops", "--only", "doubled", cwd=tmp_path)
    assert failed.returncode == 1 and "FAIL" in failed.stdout and "FAILED: Doubled" in failed.stdout
    (tmp_path / "empty_ops.py").write_text("X = 1\n")
    assert "needs a list named CHECKS" in cli("--add", "empty_ops", cwd=tmp_path).stderr
    nothing = cli("--only", "no such op")
    assert nothing.returncode == 2 and "no op's name contains" in nothing.stderr

