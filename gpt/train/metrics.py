"""What a run reports: the metrics log, the progress bar, the loss plot, MFU.

    MetricsLog(path)        one JSON object per line, appended as the run goes
    progress(total, ...)    a tqdm bar on a terminal; one summary line in a log file
    plot_losses(rows, path) loss.png (matplotlib); draw_losses(ax, rows) its lines on given axes;
                            step_figure / save_figure the frame every --plot picture shares
    measure_peak_flops(...) the FLOP/s that MFU is measured against
    perplexity(loss)        e^loss, inf where it overflows
    format_row(row)         an evaluation row on one line
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from tinytensor.backend import get_array_module, to_device
from tinytensor.serialize import write_atomically


def format_row(row: dict[str, Any]) -> str:
    """An evaluation row as `step 50 | val_loss 0.4321 | ...`."""
    return " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def perplexity(loss: float) -> float:
    """e^loss; a loss past float64's range (an exploding run) gives inf instead of an OverflowError."""
    return math.exp(loss) if loss < 709.0 else math.inf


class MetricsLog:
    """metrics.jsonl: one JSON object per line, each with a "step"."""

    def __init__(self, path: str | Path, say: Callable[[str], None] = print):
        self.path = Path(path)
        self.say = say
        self._file: Any = None

    def read(self) -> list[dict]:
        """The rows written so far. A torn last line (a crash mid-write) is skipped,
        with a note; a broken line anywhere else is an error naming it."""
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        rows = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if n < len(lines):
                    raise ValueError(f"{self.path}, line {n}: not valid JSON; fix or delete the line") from None
                self.say(f"note: the last line of {self.path} was cut off mid-write (a crash?); it is dropped")
        return rows

    def keep_until(self, step: int) -> None:
        """Forget what was logged past `step` (a resumed run redoes it); atomic, like every rewrite."""
        kept = [row for row in self.read() if row["step"] <= step]
        write_atomically(self.path, "".join(json.dumps(row) + "\n" for row in kept).encode())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def write(self, row: dict) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _Summary:
    """A stand-in for a tqdm bar when the output is not a terminal: a redrawn bar
    would leave many copies of itself in a log file, so this prints one line at the end."""

    def __init__(self, total: int, initial: int, desc: str):
        self.n, self.total, self.desc, self.postfix = initial, total, desc, ""
        self.start = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        tail = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} steps in {time.perf_counter() - self.start:.1f}s{tail}",
              file=sys.stderr, flush=True)


def progress(total: int, initial: int = 0, desc: str = "train", enabled: bool = True) -> Any:
    """A progress bar with update / set_postfix / close: tqdm on a terminal, else one summary line."""
    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=True)
    return _Summary(total, initial, desc)


def plot_available(wanted: bool, picture: str, say: Callable[[str], None]) -> bool:
    """Whether to draw `picture` for --plot: only when it is wanted and matplotlib is
    installed; when it is missing, one line says so and the run goes on."""
    if not wanted:
        return False
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        say(f"--plot needs matplotlib, which is not installed (pip install matplotlib): no {picture}")
        return False
    return True


def step_figure(panels: int) -> tuple[Any, list[Any]]:
    """A matplotlib figure of `panels` side by side, each with the step as its x axis, drawn
    for a file only (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(7 if panels == 1 else 5.5 * panels, 4), squeeze=False)
    return fig, list(axes[0])


def save_figure(fig: Any, axes: list[Any], path: Path) -> None:
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot_losses(metrics: list[dict], path: Path) -> None:
    fig, (ax,) = step_figure(1)
    draw_losses(ax, metrics)
    ax.set_ylabel("loss (nats/token)")
    save_figure(fig, [ax], path)


def draw_losses(ax: Any, metrics: list[dict]) -> None:
    """The train loss of each step, and each evaluation's train and val loss, on matplotlib axes `ax`."""
    steps = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "val_loss" in m]
    ax.plot([m["step"] for m in steps], [m["loss"] for m in steps], lw=0.5, alpha=0.5, label="train (each step)")
    ax.plot([m["step"] for m in evals], [m["train_loss"] for m in evals], "o-", label="train (eval)")
    ax.plot([m["step"] for m in evals], [m["val_loss"] for m in evals], "o-", label="val")


def measure_peak_flops(device: str, dtype: str) -> float:
    """FLOP/s of a large matmul on this device: the ceiling MFU is measured against
    (a CPU has no datasheet number the way a GPU does)."""
    n = 4096 if device == "cuda" else 1024
    # a generator of its own: drawing from tinytensor's would break bit-identical resume
    a = to_device(np.random.default_rng(0).standard_normal((n, n)).astype(dtype), device)
    xp = get_array_module(a)
    sync = xp.cuda.Device().synchronize if device == "cuda" else (lambda: None)
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        a @ a
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best
