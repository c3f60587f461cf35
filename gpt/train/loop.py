"""The one training loop. Pretraining, classification and instruction tuning all step through it.

    for each step:
        lr = warmup + cosine schedule(step)
        for each micro-batch:                      (--grad-accum of them)
            batch = task.next_batch()              the whole micro-batch, the same on every process
            loss  = task.loss(model, my rows)      summed over my rows' targets
            (loss / (targets in the batch * micro-batches)).backward()
        sum the gradients over the processes       (a no-op in one process)
        clip the global gradient norm; optimizer step
        evaluate / checkpoint when due; log one row

A task supplies only what differs: its batches, its loss, its evaluation (the
`Task` protocol). Dividing each process's *summed* loss by the whole batch's
target count makes the summed gradient the mean over the batch, however the
rows are split between processes: the same step as one process would take.
"""
from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
from tqdm import tqdm

import tinytensor as tt
from tinytensor import Tensor, nn, optim

from .distributed import Comm, SingleProcess
from .metrics import MetricsLog, progress

# a mean loss above this many nats per target has exploded (a uniform guess over
# GPT-2's vocabulary costs 10.8): stop as for NaN, before the weights are ruined too
EXPLODED_LOSS = 1e3


class Diverged(RuntimeError):
    """The loss or the gradient turned NaN, infinite, or exploded."""


@dataclass(frozen=True)
class Batch:
    """One micro-batch, whole. `arrays` share their first axis (the rows); `n_targets`
    counts what the loss is summed over in all rows (tokens, or examples);
    `n_tokens` counts the input tokens (for tokens/s)."""
    arrays: tuple[Any, ...]
    n_targets: int
    n_tokens: int

    def rows(self, rank: int, size: int) -> tuple[Any, ...]:
        """Process `rank`'s share of the rows: the contiguous slice one process would
        hold at that position of the batch (sizes differ by at most one row)."""
        n = len(self.arrays[0])
        start, stop = rank * n // size, (rank + 1) * n // size
        return tuple(a[start:stop] for a in self.arrays)


class Task(Protocol):
    def next_batch(self) -> Batch:
        """The next training micro-batch (every process draws the same one)."""

    def loss(self, model: nn.Module, rows: tuple[Any, ...]) -> Tensor:
        """The loss summed over the targets of these rows (a scalar)."""

    def evaluate(self, model: nn.Module, comm: "Comm", final: bool) -> dict[str, Any]:
        """The metrics of an evaluation (model in eval mode, no graph)."""

    def describe(self, row: dict[str, Any]) -> str:
        """An evaluation row as the line(s) printed."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def summed(model: nn.Module, batches: Iterable[Batch], measure: Callable[[nn.Module, tuple], list[float]],
           comm: Comm) -> np.ndarray:
    """Sums of `measure(model, rows)` (a list of numbers, e.g. [loss sum, count]) over
    every batch, each process taking its rows of each batch, added over processes."""
    total = None
    with tt.no_grad():
        for batch in batches:
            part = np.asarray(measure(model, batch.rows(comm.rank, comm.size)), dtype=np.float64)
            total = part if total is None else total + part
    return comm.sum(total)


@dataclass(frozen=True)
class LoopConfig:
    max_steps: int
    lr: float
    min_lr: float
    warmup_steps: int
    decay_steps: int                   # where the cosine reaches min_lr, counted from step 0
    grad_accum: int = 1
    grad_clip: float = 0.0             # 0: no clipping
    eval_interval: int = 0             # 0: no evaluations along the way
    eval_at_start: bool = False
    eval_at_end: bool = False
    checkpoint_interval: int = 0       # 0: checkpoints only at the end and on Ctrl-C (with a save hook)


class StopOnSignal:
    """Turn the first Ctrl-C (SIGINT), or a SIGTERM (what schedulers, `timeout` and container
    stops send, seconds before a SIGKILL), into a request to stop at the end of the current
    step; a second signal interrupts at once. `signal` is the one that came (None if none)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, say: Callable[[str], None] = tqdm.write):
        self.say = say

    def __enter__(self) -> "StopOnSignal":
        self.signal: int | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.say(f"{name}: stopping after this step and saving (press Ctrl-C again to quit now)")

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class Trainer:
    """Steps `model` with `optimizer` on `task` for cfg.max_steps steps.

    log: where step and evaluation rows go (rank 0 only writes); save(step) writes
    a checkpoint and returns its folder; after_eval(row) runs after each
    evaluation (a plot, say). flops_per_token and peak_flops add MFU to the rows.
    say(text) prints between the progress bar's redraws; the default, comm.print, prints on rank 0 only.
    """

    def __init__(self, model: nn.Module, optimizer: optim.Optimizer, task: Task, cfg: LoopConfig, *,
                 log: MetricsLog | None = None, save: Callable[[int], Path] | None = None,
                 after_eval: Callable[[dict], None] | None = None, flops_per_token: float | None = None,
                 peak_flops: float | None = None, comm: Comm | None = None, desc: str = "train",
                 say: Callable[[str], None] | None = None):
        self.model, self.optimizer, self.task, self.cfg = model, optimizer, task, cfg
        self.log, self.save, self.after_eval = log, save, after_eval
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.comm = comm or SingleProcess()
        self.desc, self.say = desc, say or self.comm.print
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.step = 0
        self.resumed_at: int | None = None
        self.stopped_by: signal.Signals | None = None   # the signal that stopped run() early, on every process
        self.history: list[dict] = []
        self._tokens_per_s: float | None = None
        self._start = time.perf_counter()

    @property
    def main(self) -> bool:
        """Whether this process is the one that writes and prints."""
        return self.comm.rank == 0

    def resume_at(self, step: int) -> None:
        """Continue after `step` steps (the model, optimizer and task state already restored)."""
        self.step = self.resumed_at = step

    # ---- the loop ------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Train to cfg.max_steps (or to a Ctrl-C); returns the evaluation rows."""
        cfg, last_saved = self.cfg, self.resumed_at
        self.model.train()
        bar = progress(cfg.max_steps, self.step, self.desc, enabled=self.main)
        try:
            with StopOnSignal(self.say) as signals:
                while True:
                    # at a step boundary: `self.step` optimizer steps are done
                    done = self.step >= cfg.max_steps
                    stop = done or self._stop_requested(signals)
                    # a signal's stop saves at once: a SIGTERM's grace (often 10 s) has no room for an evaluation
                    if (done or not stop) and self._eval_due(done):
                        self.evaluate(final=done)
                    if self.save is not None and self.step != last_saved and (stop or self._checkpoint_due()):
                        path = self.save(self.step)
                        last_saved = self.step
                        if stop and not done and self.main:
                            self.say(f"{self.stopped_by.name}: stopped at step {self.step}; saved {path}")
                    if stop:
                        break
                    row = self.train_step()
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}",
                                    **({"tok_s": f"{row['tokens_per_s']:,.0f}"} if "tokens_per_s" in row else {}),
                                    **({"mfu": f"{row['mfu']:.1%}"} if "mfu" in row else {}))
        finally:
            bar.close()
            if self.log is not None:
                self.log.close()
        return self.history

    def _stop_requested(self, signals: StopOnSignal) -> bool:
        """A Ctrl-C or SIGTERM on any process stops them all at the same step (SIGTERM's name wins)."""
        interrupts, terms = self.comm.sum([float(signals.signal == signal.SIGINT),
                                           float(signals.signal == signal.SIGTERM)])
        if terms or interrupts:
            self.stopped_by = signal.SIGTERM if terms else signal.SIGINT
        return self.stopped_by is not None

    def _eval_due(self, done: bool) -> bool:
        cfg, step = self.cfg, self.step
        if step == self.resumed_at:
            return False               # the run that wrote the checkpoint evaluated here already
        if done:
            return cfg.eval_at_end
        if step == 0:
            return cfg.eval_at_start
        return cfg.eval_interval > 0 and step % cfg.eval_interval == 0

    def _checkpoint_due(self) -> bool:
        interval = self.cfg.checkpoint_interval
        return interval > 0 and self.step > 0 and self.step % interval == 0

    # ---- one step -------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        """One optimizer step over cfg.grad_accum micro-batches; returns its log row."""
        cfg, comm = self.cfg, self.comm
        t0 = time.perf_counter()
        lr = optim.cosine_schedule(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mean_losses, tokens = 0.0, 0
        for _ in range(cfg.grad_accum):
            batch = self.task.next_batch()
            loss = self.task.loss(self.model, batch.rows(comm.rank, comm.size))
            # scaled before backward, so the summed gradient is the mean over the step's targets:
            # the learning rate and the clipping threshold mean the same at any --grad-accum
            (loss * (1.0 / (batch.n_targets * cfg.grad_accum))).backward()
            mean_losses += loss.item() / batch.n_targets
            tokens += batch.n_tokens
        comm.sum_gradients(self.params)
        loss_value = float(comm.sum([mean_losses])[0]) / cfg.grad_accum
        if not math.isfinite(loss_value) or loss_value > EXPLODED_LOSS:
            raise Diverged(f"the loss became {loss_value:.4g} at step {self.step + 1}")
        norm = optim.clip_grad_norm_(self.params, cfg.grad_clip or math.inf)
        if not math.isfinite(norm):
            raise Diverged(f"the gradient norm became {norm} at step {self.step + 1}")
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.step += 1
        row = {"step": self.step, "loss": loss_value, "lr": lr, "grad_norm": norm, **self._speed(tokens, t0),
               "time": time.perf_counter() - self._start}
        if self.log is not None and self.main:
            self.log.write(row)
        return row

    def _speed(self, tokens: int, t0: float) -> dict[str, float]:
        dt = time.perf_counter() - t0
        # smoothed, since single steps jitter with whatever else the machine is doing
        now = tokens / dt
        self._tokens_per_s = now if self._tokens_per_s is None else 0.9 * self._tokens_per_s + 0.1 * now
        speed = {"tokens_per_s": self._tokens_per_s}
        if self.flops_per_token and self.peak_flops:
            speed["mfu"] = self.flops_per_token * self._tokens_per_s / self.peak_flops
        return speed

    # ---- evaluation -------------------------------------------------------------------
    def evaluate(self, final: bool = False) -> dict[str, Any]:
        """Evaluate now (also called by a fine-tune for its final, full evaluation)."""
        with self.model.evaluating():
            row = {"step": self.step, **self.task.evaluate(self.model, self.comm, final)}
        self.history.append(row)
        if self.main:
            if self.log is not None:
                self.log.write(row)
            self.say(self.task.describe(row))
            if self.after_eval is not None:
                self.after_eval(row)
        return row
