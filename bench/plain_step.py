"""A training step written as a plain script, against train.py's own step and PyTorch eager.

"Plain" is the loop a learner writes from the README: GPT, AdamW, backward,
step, and nothing else (no tt.tune_allocator() call: tinytensor tunes malloc
by itself when the first tensor is made). "train.py" is the training loop's own
step (gpt.train.loop.Trainer.train_step: schedule, loss scaling, gradient norm,
AdamW) on the same model and batch. With torch installed, bench/torch_gpt.py's
copy of the same model is timed too. The three take turns, a few steps each,
so noise from a shared machine hits all alike. Last, the plain step once more
in a fresh process with TINYTENSOR_TUNE_MALLOC=0: what it cost before the
allocator setting became the default. Goals: plain = train.py, plain <= 1.0x PyTorch.

    python bench/plain_step.py                 # the nano preset, batch 12, 20 steps each
    python bench/plain_step.py --steps 40 --no-torch
    BENCH_QUICK=1 python bench/plain_step.py   # a tiny model, 2 steps each (seconds; no torch)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinytensor as tt  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402
from gpt.train.loop import Batch, LoopConfig, Trainer  # noqa: E402
from tinytensor import optim  # noqa: E402

from bench_quick import QUICK  # noqa: E402  (bench/bench_quick.py: bench/ is on the path)
from timing import interleaved_medians  # noqa: E402  (bench/timing.py)
# nano as bench/gpt.py times it (a 65-character vocabulary, batch 12); quick: one tiny block
CONFIG = (GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=32) if QUICK
          else GPTConfig.preset("nano", vocab_size=65))
BATCH = 2 if QUICK else 12
LR, WEIGHT_DECAY = 3e-4, 0.1


def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (BATCH, CONFIG.block_size)
    return rng.integers(0, CONFIG.vocab_size, shape), rng.integers(0, CONFIG.vocab_size, shape)


def plain_step() -> Callable[[], float]:
    """The README's loop, as a learner writes it."""
    tt.manual_seed(0)
    model = GPT(CONFIG)
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, WEIGHT_DECAY), lr=LR)
    x, y = batch()

    def step() -> float:               # PyTorch's usual order: clear, forward, backward, update
        opt.zero_grad()
        loss = model(x, targets=y)[1]
        loss.backward()
        opt.step()
        return loss.item()

    return step


class OneBatch:
    """A task of the training loop that serves the same batch every step (the loop's Task protocol)."""

    def __init__(self) -> None:
        self.x, self.y = batch()

    def next_batch(self) -> Batch:
        return Batch((self.x, self.y), self.y.size, self.x.size)   # (rows, target count, token count)

    def loss(self, model: GPT, rows: tuple) -> tt.Tensor:
        x, y = rows
        return model(x, targets=y, reduction="sum")[1]             # summed, as pretraining's task


def train_py_step() -> Callable[[], float]:
    """The training loop's own step, the one train.py runs (no clipping, a constant learning rate)."""
    tt.manual_seed(0)
    model = GPT(CONFIG)
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, WEIGHT_DECAY), lr=LR)
    # max steps, lr, min lr, warmup steps, decay steps: positional, as LoopConfig declares them
    trainer = Trainer(model, opt, OneBatch(), LoopConfig(10**9, LR, LR, 0, 10**9))
    return lambda: trainer.train_step()["loss"]


def torch_step() -> Callable[[], float]:
    import torch_gpt  # bench/torch_gpt.py: this script's folder is on the path

    tt.manual_seed(0)
    x, y = batch()
    return torch_gpt.train_step(GPT(CONFIG), x, y, WEIGHT_DECAY, LR)


def interleaved_ms(steps: dict[str, Callable[[], float]], reps: int, block: int) -> dict[str, float]:
    """Median milliseconds of each step (bench/timing.py's interleaved_medians), by name."""
    return {name: 1e3 * t for name, t in zip(steps, interleaved_medians(list(steps.values()), reps, block))}


def plain_without_tuning(reps: int) -> float:
    """The plain step's ms in a fresh process with TINYTENSOR_TUNE_MALLOC=0."""
    out = subprocess.run([sys.executable, __file__, "--plain-only", "--steps", str(reps)], check=True,
                         env={**os.environ, "TINYTENSOR_TUNE_MALLOC": "0"}, capture_output=True, text=True)
    return json.loads(out.stdout)["plain"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2 if QUICK else 20, help="timed steps of each (median)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is installed")
    ap.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    block = max(1, min(5, args.steps))
    if args.plain_only:
        print(json.dumps(interleaved_ms({"plain": plain_step()}, args.steps, block)))
        return
    steps = {"plain": plain_step(), "train.py": train_py_step()}
    with_torch = not (QUICK or args.no_torch) and importlib.util.find_spec("torch") is not None
    if with_torch:
        steps["pytorch"] = torch_step()
    first = {name: step() for name, step in steps.items()}     # the same model and batch: the same first loss
    if with_torch:
        assert math.isclose(first["plain"], first["pytorch"], rel_tol=1e-4), first
    # train.py's loss is summed and divided by the target count, the plain one a mean: equal to float32 rounding
    assert math.isclose(first["plain"], first["train.py"], rel_tol=1e-5), first
    ms = interleaved_ms(steps, args.steps, block)
    untuned = plain_without_tuning(args.steps)
    n_params = sum(p.size for p in GPT(CONFIG).parameters())
    print(f"{'quick' if QUICK else 'nano'}: {CONFIG.n_layer} layers, n_embd {CONFIG.n_embd}, "
          f"{n_params / 1e6:.2f}M parameters, batch {BATCH} x {CONFIG.block_size} tokens; median of {args.steps} steps")
    print(f"  plain script      {ms['plain']:7.1f} ms/step")
    print(f"  train.py's step   {ms['train.py']:7.1f} ms/step   plain / train.py = {ms['plain'] / ms['train.py']:.2f}x "
          "(goal 1.0x)")
    if with_torch:
        print(f"  PyTorch eager     {ms['pytorch']:7.1f} ms/step   plain / PyTorch = {ms['plain'] / ms['pytorch']:.2f}x "
              "(goal <= 1.0x)")
    else:
        print("  PyTorch eager     skipped (quick mode, --no-torch, or torch not installed)")
    print(f"  plain script with TINYTENSOR_TUNE_MALLOC=0 (a fresh process): {untuned:.1f} ms/step, "
          f"{untuned / ms['plain']:.2f}x the default")


if __name__ == "__main__":
    main()
