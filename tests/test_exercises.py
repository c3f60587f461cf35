"""docs/exercises/: every shipped solution passes the checker, every unedited
exercise fails it, each exercise is its solution with the answers taken out,
exercise 8's training matches the engine's, and the checker's hints say what
a planted bug got wrong."""
from __future__ import annotations

import importlib.util
import io
import runpy
from pathlib import Path

import numpy as np
import pytest

import tinytensor as tt
from tinytensor import exercise
from tinytensor.__main__ import main as cli

EXERCISES = exercise.EXERCISES
SOLUTIONS = exercise.SOLUTIONS
NAMES = [p.name for p in exercise.exercise_files(SOLUTIONS)]


def _maker():
    spec = importlib.util.spec_from_file_location("make_exercises", EXERCISES / "make_exercises.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(path: Path) -> tuple[bool, str]:
    out = io.StringIO()
    return exercise.check_file(path, out), out.getvalue()


def test_nine_exercises_each_with_its_solution():
    assert [int(n.split("_")[0]) for n in NAMES] == list(range(1, 10))
    assert [p.name for p in exercise.exercise_files(EXERCISES)] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_the_solution_passes(name):
    ok, report = check(SOLUTIONS / name)
    assert ok, report
    assert "every gradient matches" in report


@pytest.mark.parametrize("name", NAMES)
def test_the_unedited_exercise_fails_as_not_done(name):
    ok, report = check(EXERCISES / name)
    assert not ok
    assert "not done" in report or "training waits" in report, report


@pytest.mark.parametrize("name", NAMES)
def test_the_exercise_is_its_solution_without_the_answers(name):
    solution = (SOLUTIONS / name).read_text()
    assert "# answer" in solution
    assert (EXERCISES / name).read_text() == _maker().strip_answers(solution), (
        f"docs/exercises/{name} differs from its solution: run python docs/exercises/make_exercises.py")


def test_strip_answers_keeps_the_name_and_unpacks():
    text = "x = 1\na, b = f(x)  # answer: two\n    # answer { return ...\n    y = 2\n    return y\n    # answer }\n"
    assert _maker().strip_answers(text) == "x = 1\na, b = ..., ...  # TODO: two\n    return ...  # TODO\n"


def test_exercise_8_trains_100_steps_matching_the_engine():
    ns = runpy.run_path(str(SOLUTIONS / "8_whole_gpt.py"), run_name="__exercise__")
    yours, engine = ns["train"]["yours"](), ns["train"]["engine"]()
    assert len(yours) == len(engine) == 100
    assert np.max(np.abs(np.array(yours) - np.array(engine))) <= 1e-9
    assert engine[-1] < engine[0] / 4            # it learns the cycle: the run is not a no-op


def test_exercise_8_notices_a_wrong_adamw(tmp_path):
    text = (SOLUTIONS / "8_whole_gpt.py").read_text()
    bugged = text.replace("(1 - b2 ** t)", "(1 - b2 ** (t + 1))")   # a bias correction off by one step
    assert bugged != text
    path = tmp_path / "8_whole_gpt.py"
    path.write_text(bugged)
    ok, report = check(path)
    assert not ok
    assert "the first step off" in report and "AdamW" in report


def _planted(tmp_path, name, old, new):
    text = (SOLUTIONS / name).read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return check(path)


def test_a_wrong_layer_norm_backward_is_marked_at_x(tmp_path):
    # the second mean term left out of layer norm's dx
    ok, report = _planted(tmp_path, "4_norms.py", " - xhat * (gw * xhat).mean(-1, keepdims=True))", ")")
    assert not ok
    marked = [line for line in report.splitlines() if line.startswith(">")]
    assert len(marked) == 1 and marked[0].split()[1] == "x", report
    for line in report.splitlines():
        if line.split()[:1] in (["w"], ["b"], ["y"], ["z"]):
            assert " yes " in line, line


def test_a_missing_sum_gets_the_broadcast_hint(tmp_path):
    # lse (N, 1) was broadcast over the row: its gradient must be summed back, not kept (N, V)
    ok, report = _planted(tmp_path, "2_mlp_atoms.py", "dlse = -dlogp.sum(axis=-1, keepdims=True)",
                          "dlse = -dlogp")
    assert not ok
    assert "a sum in the forward is a broadcast in the backward, and back" in report
    assert "> lse" in report


def test_a_transposed_weight_gradient_is_named(tmp_path):
    ok, report = _planted(tmp_path, "3_cross_entropy.py", "dW = dlogits.T @ x.data", "dW = x.data.T @ dlogits")
    assert not ok and "transposed" in report and "> W" in report


def test_a_rejected_response_with_the_chosen_sign_is_marked_at_ell_r(tmp_path):
    # DPO: the rejected log-prob enters the margin with a minus, so its gradient is -ddelta
    ok, report = _planted(tmp_path, "9_dpo.py", "dell_r = -ddelta", "dell_r = ddelta")
    assert not ok
    assert "> ell_r" in report and "the sign of dell_r is flipped" in report
    for line in report.splitlines():
        if line.split()[:1] in (["ell_c"], ["delta"], ["z"]):
            assert " yes " in line, line


def test_hints_for_values():
    true = np.array([[1.0, -2.0], [3.0, 0.5]])
    assert "sign" in exercise.hint_for("w", -true, true)
    assert "0.5 times" in exercise.hint_for("w", true / 2, true)
    assert "transposed" in exercise.hint_for("w", true.T, true)
    assert "NaN" in exercise.hint_for("w", np.where(true > 2, np.nan, true), true)
    assert "not done" in exercise.hint_for("w", ..., true)
    assert "all zeros" in exercise.hint_for("w", np.zeros((2, 2)), true)


def test_the_first_wrong_row_is_the_one_nearest_the_loss():
    rows = [exercise.Row(n, "()", ok, ok, 0.0, None) for n, ok in [("a", False), ("b", False), ("c", True)]]
    assert exercise.first_wrong(rows) == 1
    assert exercise.first_wrong(rows[2:]) is None


def test_cli_lists_checks_and_exits_with_the_verdict(capsys):
    assert cli(["exercise"]) == 0
    listing = capsys.readouterr().out
    assert all(f"docs/exercises/{name}" in listing for name in NAMES)
    assert cli(["exercise", "3", "--solution"]) == 0
    assert cli(["exercise", "3"]) == 1
    assert cli(["exercise", str(SOLUTIONS / "3_cross_entropy.py")]) == 0
    with pytest.raises(SystemExit, match="no exercise 42"):
        cli(["exercise", "42"])
    with pytest.raises(SystemExit, match="not a file"):
        cli(["exercise", "no/such/file.py"])
    with pytest.raises(SystemExit, match="--solution takes an exercise number, not a path"):
        cli(["exercise", str(SOLUTIONS / "3_cross_entropy.py"), "--solution"])
    with pytest.raises(SystemExit, match="--solution needs an exercise number"):
        cli(["exercise", "--solution"])


def test_grads_naming_a_tensor_the_forward_lacks_is_refused():
    x = tt.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match="grads names 'y', but forward has no tensor 'y' \\(it has: x\\)"):
        exercise.compare({"x": x}, (x * x).sum(), {"y": np.zeros(2)})


def test_a_training_run_of_the_wrong_length_fails():
    out = io.StringIO()
    assert not exercise.check_training({"yours": lambda: [1.0], "engine": lambda: [1.0, 0.5]}, out)
    assert "your run gave 1 losses, the engine's 2" in out.getvalue()


def test_a_shape_error_in_the_backward_is_reported_with_the_hint(tmp_path):
    ok, report = _planted(tmp_path, "2_mlp_atoms.py", "dlmax = -dshifted.sum(axis=-1, keepdims=True)",
                          "dlmax = -dshifted.sum(axis=-1)")
    assert not ok and "the file raised at line" in report and "a sum in the forward is a broadcast" in report


def test_a_file_that_binds_nothing_is_told_what_to_bind(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("x = 1\n")
    ok, report = check(path)
    assert not ok and "must bind forward, loss, grads" in report


@pytest.mark.parametrize("name", NAMES)
def test_jupytext_reads_each_exercise_as_a_notebook(name):
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(EXERCISES / name)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and "code" in kinds
    assert notebook.cells[0].source.startswith("# Exercise ")
