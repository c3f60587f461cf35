"""GPT training-step speed against its matmul floor, and KV-cache generation speed.

For each config, one training step (forward, loss, backward, AdamW) is timed,
and so is the "matmul floor": the same step's matrix products alone, as plain
NumPy calls on the same shapes. The ratio step / floor says how much time goes
anywhere but the matmuls (PyTorch eager on this 2-core machine: 1.64x for nano,
2.65x for mini). MFU is model FLOPs per second over the matmul rate NumPy
reaches on a large square product in the same run.

    python bench/gpt.py                 # nano and mini, then generation
    python bench/gpt.py --configs nano --steps 20
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# this script is named like the package it measures: import the package, not itself
sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402
from tinytensor import optim  # noqa: E402

SETUPS = {"nano": dict(batch=12, vocab=65), "mini": dict(batch=8, vocab=50257)}


def median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_floor(cfg: GPTConfig, B: int, reps: int) -> float:
    """The step's matrix products alone, forward and backward, in plain NumPy."""
    rng = np.random.default_rng(0)
    T, C, H, V = cfg.block_size, cfg.n_embd, cfg.n_head, cfg.vocab_size
    D, N = C // H, B * T

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    linears = [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)]  # (in, out) per block
    xs = {k: r(N, k[0]) for k in linears}
    ws = {k: r(k[1], k[0]) for k in linears}
    gs = {k: r(N, k[1]) for k in linears}
    q, kk, v, g = r(B, H, T, D), r(B, H, T, D), r(B, H, T, D), r(B, H, T, D)
    att = r(B, H, T, T)
    x_head, wte, g_head = r(N, C), r(V, C), r(N, V)

    def step():
        for _ in range(cfg.n_layer):
            for k in linears:
                xs[k] @ ws[k].T          # forward: y = x W^T
                gs[k] @ ws[k]            # dx = g W
                gs[k].T @ xs[k]          # dW = g^T x
            q @ kk.swapaxes(-1, -2)      # scores
            att @ v                      # weighted sum
            g @ v.swapaxes(-1, -2)       # d att
            att.swapaxes(-1, -2) @ g     # dv
            att @ kk                     # dq
            att.swapaxes(-1, -2) @ q     # dk
        x_head @ wte.T                   # logits
        g_head @ wte                     # dx
        g_head.T @ x_head                # dW of the tied head

    return median_time(step, reps)


def peak_matmul_flops() -> float:
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    t = median_time(lambda: a @ a, 5)
    return 2 * 2048 ** 3 / t


def train_step_time(cfg: GPTConfig, B: int, reps: int) -> float:
    tt.manual_seed(0)
    model = GPT(cfg)
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, 0.1), lr=3e-4)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))
    y = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))

    def step():
        _, loss = model(x, targets=y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return median_time(step, reps)


def generation(cfg: GPTConfig, new_tokens: int) -> tuple[float, float]:
    tt.manual_seed(0)
    model = GPT(cfg)
    prompt = np.zeros((1, 1), dtype=np.int64)
    rates = []
    for use_cache in (True, False):
        t0 = time.perf_counter()
        model.generate(prompt, new_tokens, temperature=0, use_cache=use_cache)
        rates.append(new_tokens / (time.perf_counter() - t0))
    return rates[0], rates[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["nano", "mini"], choices=sorted(SETUPS))
    ap.add_argument("--steps", type=int, default=10, help="timed steps per config (median)")
    ap.add_argument("--gen-tokens", type=int, default=200)
    args = ap.parse_args()

    peak = peak_matmul_flops()
    print(f"NumPy float32 matmul rate (2048^2 @ 2048^2): {peak / 1e9:.1f} GFLOP/s")
    print(f"{'config':8} {'batch':>5} {'vocab':>6} {'ms/step':>9} {'tokens/s':>9} {'MFU':>6} {'floor ms':>9} {'step/floor':>10}")
    for name in args.configs:
        setup = SETUPS[name]
        cfg = GPTConfig.preset(name, vocab_size=setup["vocab"])
        B, T = setup["batch"], cfg.block_size
        step = train_step_time(cfg, B, args.steps)
        floor = matmul_floor(cfg, B, args.steps)
        flops = GPT(cfg).flops_per_token() * B * T
        print(f"{name:8} {B:5d} {cfg.vocab_size:6d} {step * 1e3:9.1f} {B * T / step:9.0f} "
              f"{flops / step / peak:6.1%} {floor * 1e3:9.1f} {step / floor:9.2f}x")
    print("targets: step/floor <= 1.4x (nano), <= 1.5x (mini)")

    for name, vocab in (("nano", 65), ("mini", 50257)):
        cfg = GPTConfig.preset(name, vocab_size=vocab, block_size=256)
        cached, uncached = generation(cfg, args.gen_tokens)
        print(f"generation, {name} (vocab {vocab}, block 256), {args.gen_tokens} new tokens after a 1-token prompt: "
              f"{cached:.0f} tokens/s with the KV cache, {uncached:.0f} without: {cached / uncached:.1f}x (target >= 5x)")

if __name__ == "__main__":
    main()
