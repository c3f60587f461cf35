"""`python -m tinytensor exercise [N | PATH] [--solution]`: check a backward written by hand.

An exercise file (docs/exercises/, Jupytext's percent format, a plain script)
writes a forward with tinytensor, one named line at a time, and leaves the
backward to the learner, in plain NumPy. Run as a script, it must bind:

    forward = {"name": tensor, ...}   # every tensor to check, in forward order
    loss    = ...                      # the scalar tinytensor Tensor at the end
    grads   = {"name": dname, ...}     # the learner's arrays; `...` means not done yet

A key of `grads` may carry a label in brackets, "q (loop)", to check a second
answer for forward["q"]. Exercise 8 also binds `train` (see check_training).

The checker computes the true gradients with `tt.grads_of(loss, forward)`
and prints one row per tensor in forward order. The row it marks is the first
wrong one the backward meets, walking from the loss back: the one to fix
first, since every gradient before it in the forward is computed from it.
"""
from __future__ import annotations

import runpy
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .tensor import Tensor, grads_of

EXERCISES = Path(__file__).resolve().parents[1] / "docs" / "exercises"
SOLUTIONS = EXERCISES / "solutions"
RTOL, ATOL = 1e-7, 1e-10          # float64: a right backward is off by rounding only (~1e-15)
TRAIN_TOL = 1e-9                  # exercise 8: your losses against the engine's, every step


def number_of(path: Path) -> int:
    """An exercise file's number: the one its name starts with."""
    return int(path.name.split("_")[0])


def exercise_files(folder: Path = EXERCISES) -> list[Path]:
    """The exercise files of a folder, in their order (the number their name starts with)."""
    return sorted(folder.glob("[0-9]*_*.py"), key=number_of)


def title_of(path: Path) -> str:
    """The first markdown heading of an exercise file."""
    for line in path.read_text().splitlines():
        if line.startswith("# #"):
            return line.lstrip("# ").strip()
    return path.stem


def resolve(which: str, solution: bool = False) -> Path:
    """An exercise number (its learner's file, or with `solution` the shipped solution) or a path."""
    if which.isdigit():
        folder = SOLUTIONS if solution else EXERCISES
        found = [p for p in exercise_files(folder) if number_of(p) == int(which)]
        if not found:
            numbers = ", ".join(str(number_of(p)) for p in exercise_files(EXERCISES))
            raise SystemExit(f"exercise: there is no exercise {which} in {folder} (there are: {numbers})")
        return found[0]
    path = Path(which)
    if solution:
        raise SystemExit("exercise: --solution takes an exercise number, not a path")
    if not path.is_file():
        raise SystemExit(f"exercise: {path} is not a file; give an exercise number (see `python -m tinytensor "
                         f"exercise`) or the path of an exercise file")
    return path


@dataclass
class Row:
    name: str
    shape: str
    exact: bool
    close: bool
    max_diff: float | None
    hint: str | None          # why it is wrong, where something can be said


def _numbers(a: Any) -> np.ndarray | None:
    """The learner's answer as a float64 array, or None when it is not one (`...`, None, a Tensor)."""
    if a is Ellipsis or a is None or isinstance(a, Tensor):
        return None
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def hint_for(name: str, mine: Any, true: np.ndarray) -> str | None:
    """What a wrong answer most likely got wrong, from its shape and values."""
    d = f"d{name.split(' (')[0]}"
    if mine is Ellipsis:
        return f"not done: {d} is still `...`"
    if mine is None:
        return f"{d} is None: does a function forget to return it?"
    if isinstance(mine, Tensor):
        return f"{d} is a tinytensor Tensor: write the backward in plain NumPy, from the forward's .data"
    try:
        mine = np.asarray(mine, dtype=np.float64)
    except (TypeError, ValueError):
        return f"{d} is a {type(mine).__name__}, not an array of numbers"
    want = true.shape
    if mine.shape != want:
        if mine.size == true.size and sorted(mine.shape) == sorted(want) and len(want) > 1:
            return (f"transposed: {d} came out {mine.shape} where {want} was due; "
                    f"swap the factors (dW = dY^T X, not X^T dY) or the axes")
        try:
            np.broadcast_shapes(mine.shape, want)
        except ValueError:
            return f"{d} came out {mine.shape} where {want} was due: a gradient has the shape of its tensor"
        return (f"{d} came out {mine.shape} where {want} was due: a sum in the forward is a broadcast in the "
                f"backward, and back (sum over the axes where {name.split(' (')[0]} has 1, keepdims=True; "
                f"broadcast where it has more)")
    if mine.dtype.kind not in "fc" or mine.size == 0:
        return None
    if np.isnan(mine).any():
        return (f"NaN in {d}: a 0 * inf or inf - inf, often a masked -inf score that was multiplied "
                f"instead of having its gradient set to 0")
    if not np.isfinite(mine).all():
        return f"inf in {d}: a division by a zero or an exp that overflowed"
    if not mine.any() and true.any():
        return f"{d} is all zeros: not written yet, or a mask that drops everything"
    if np.allclose(mine, -true, rtol=RTOL, atol=ATOL):
        return f"the sign of {d} is flipped"
    if mine.ndim == 2 and mine.shape[0] == mine.shape[1] and np.allclose(mine, true.T, rtol=RTOL, atol=ATOL):
        return f"{d} is transposed (a square shape hides it): swap the factors of the matmul"
    nz = np.abs(true) > ATOL
    if nz.any():
        ratio = mine[nz] / true[nz]
        if np.allclose(ratio, ratio[0], rtol=1e-6) and not np.isclose(ratio[0], 1.0):
            return (f"{d} is {ratio[0]:.6g} times the true one everywhere: a constant factor is off "
                    f"(a mean's 1/N, a scale, a 0.5?)")
    if not np.allclose(mine[~nz], 0, atol=ATOL) and nz.any():
        return f"{d} is not 0 where it should be (positions that do not reach the loss: masked, dropped, ignored)"
    return None


def compare(forward: dict[str, Tensor], loss: Tensor, grads: dict[str, Any]) -> list[Row]:
    """One row per entry of `grads`, in forward order, against tt.grads_of."""
    base = {key: key.split(" (")[0] for key in grads}
    for key, name in base.items():
        if name not in forward:
            raise ValueError(f"grads names {key!r}, but forward has no tensor {name!r} "
                             f"(it has: {', '.join(forward)})")
    true = grads_of(loss, forward)
    order = {name: i for i, name in enumerate(forward)}
    rows = []
    for key in sorted(grads, key=lambda k: order[base[k]]):
        mine, want = grads[key], np.asarray(true[base[key]], dtype=np.float64)
        shape = str(want.shape)
        m = _numbers(mine)
        if m is None or m.shape != want.shape:
            rows.append(Row(key, shape, False, False, None, hint_for(key, mine, want)))
            continue
        exact = bool(np.array_equal(m, want))
        close = bool(np.allclose(m, want, rtol=RTOL, atol=ATOL))
        diff = float(np.max(np.abs(m - want))) if m.size else 0.0
        rows.append(Row(key, shape, exact, close, diff, None if close else hint_for(key, mine, want)))
    return rows


def first_wrong(rows: list[Row]) -> int | None:
    """The wrong row the backward meets first, walking from the loss: the last wrong one in forward order."""
    wrong = [i for i, r in enumerate(rows) if not r.close]
    return wrong[-1] if wrong else None


def print_table(rows: list[Row], out: Any = None) -> None:
    out = out or sys.stdout
    mark = first_wrong(rows)
    width = max([len(r.name) for r in rows] + [4])
    swidth = max([len(r.shape) for r in rows] + [5])
    print(f"  {'name':<{width}}  {'shape':<{swidth}}  exact  close  max diff", file=out)
    for i, r in enumerate(rows):
        diff = "-" if r.max_diff is None else f"{r.max_diff:.2e}"
        yes = lambda b: "yes" if b else "no"  # noqa: E731
        line = f"  {r.name:<{width}}  {r.shape:<{swidth}}  {yes(r.exact):<5}  {yes(r.close):<5}  {diff}"
        if i == mark:
            line = "> " + line[2:] + "   <- the first wrong one, walking back from the loss"
        print(line, file=out)
    if mark is None:
        return
    r = rows[mark]
    hint = r.hint or (f"every gradient after {r.name} in the forward is right, so the mistake is in d{r.name}'s own "
                      f"line: the local derivative of each use of {r.name}, added over the uses")
    print(f"\n  {r.name}: {hint}", file=out)


def _ellipsis_error(exc: BaseException) -> bool:
    return "ellipsis" in str(exc).lower()


def _line_in(exc: BaseException, path: Path) -> int | None:
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return lines[-1] if lines else None


def check_training(train: dict[str, Any], out: Any = None) -> bool:
    """Exercise 8: `train` = {"yours": () -> [loss per step], "engine": () -> [loss per step]};
    both are run and must agree at every step to TRAIN_TOL."""
    out = out or sys.stdout
    yours = [float(x) for x in train["yours"]()]
    engine = [float(x) for x in train["engine"]()]
    if len(yours) != len(engine):
        print(f"\n  training: your run gave {len(yours)} losses, the engine's {len(engine)}", file=out)
        return False
    diffs = [abs(a - b) for a, b in zip(yours, engine)]
    print(f"\n  training, {len(engine)} steps: your backward and AdamW against the engine's", file=out)
    print(f"  {'step':>4}  {'yours':>18}  {'engine':>18}  diff", file=out)
    bad = next((i for i, d in enumerate(diffs) if not d <= TRAIN_TOL), None)
    shown = {0, 1, 9, len(engine) // 2, len(engine) - 1} | ({bad} if bad is not None else set())
    for i in sorted(shown):
        if 0 <= i < len(engine):
            flag = "   <- the first step off" if i == bad else ""
            print(f"  {i:>4}  {yours[i]:>18.12f}  {engine[i]:>18.12f}  {diffs[i]:.1e}{flag}", file=out)
    if bad is not None:
        hint = ("the first step's loss is computed before any update: the forward differs"
                if bad == 0 else "the gradients above match, so look at your AdamW: the moments, the bias "
                "corrections 1 - beta**t (t counts from 1), eps outside the square root, the decay lr * wd * p")
        print(f"\n  step {bad}: off by {diffs[bad]:.1e} > {TRAIN_TOL:g}; {hint}", file=out)
        return False
    print(f"  every step within {TRAIN_TOL:g}", file=out)
    return True


def check_file(path: Path, out: Any = None) -> bool:
    """Run an exercise file, compare its gradients with the engine's; True when all match."""
    out = out or sys.stdout
    path = Path(path).resolve()
    print(f"{path.name}: {title_of(path)}", file=out)
    try:
        ns = runpy.run_path(str(path), run_name="__exercise__")
    except Exception as exc:  # the learner's code: report it, whatever it raised
        line = _line_in(exc, path)
        where = f" at line {line}" if line else ""
        if _ellipsis_error(exc):
            print(f"  not done: a `...` is still used{where} ({type(exc).__name__}: {exc})", file=out)
        else:
            print(f"  the file raised{where}: {type(exc).__name__}: {exc}", file=out)
            if "broadcast" in str(exc) or "shape" in str(exc):
                print("  a d<name> has the wrong shape: a sum in the forward is a broadcast in the backward, and "
                      "back (a gradient has its tensor's shape; sum with keepdims=True)", file=out)
        return False
    missing = [k for k in ("forward", "loss", "grads") if k not in ns]
    if missing:
        print(f"  the file must bind {', '.join(missing)} (see docs/exercises/README.md)", file=out)
        return False
    ok = report(ns["forward"], ns["loss"], ns["grads"], ns.get("train"), out)
    print(f"\n{'every gradient matches' if ok else 'not yet'}: {path.name}", file=out)
    return ok


def report(forward: dict[str, Tensor], loss: Tensor, grads: dict[str, Any], train: dict[str, Any] | None = None,
           out: Any = None) -> bool:
    """The table (and exercise 8's training check) for what an exercise bound; True when all match.
    An exercise's last cell calls it, so running the file, or the notebook, checks it."""
    out = out or sys.stdout
    rows = compare(forward, loss, grads)
    print_table(rows, out)
    ok = all(r.close for r in rows)
    if train is not None:
        if ok:
            ok = check_training(train, out)
        else:
            print("\n  training waits until every gradient above is right", file=out)
    return ok


def list_exercises(out: Any = None) -> None:
    out = out or sys.stdout
    print("exercises (docs/exercises/): check one with `python -m tinytensor exercise N`", file=out)
    for p in exercise_files():
        title = title_of(p).split(": ", 1)[-1]
        print(f"  {number_of(p):>2}  {title:<48} {p.relative_to(EXERCISES.parents[1])}", file=out)


def main(which: str | None, solution: bool) -> int:
    if not EXERCISES.is_dir() and (which is None or which.isdigit()):
        raise SystemExit(f"exercise: no folder {EXERCISES}: the exercises ship with the repository, not with "
                         f"the installed package; clone it and run from there, or give the path of a file")
    if which is None:
        if solution:
            raise SystemExit("exercise: --solution needs an exercise number, e.g. `exercise 4 --solution`")
        list_exercises()
        return 0
    return 0 if check_file(resolve(which, solution)) else 1

