"""How much does the autodiff engine cost on top of the NumPy work it wraps?

Times one training step of a 3-layer MLP (batch 256, width 512, float32;
forward, mean-squared-error loss, backward, SGD update) written with
tinytensor, against the same forward and backward math written by hand in
plain NumPy, in the same run. Steps alternate between the two so that noise
from a shared machine hits both alike.

    python bench/engine.py [--steps 200] [--batch 256] [--width 512]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import tinytensor as tt
from bench_quick import quick_defaults  # bench/bench_quick.py: this script's folder is on the path


def make_params(width: int, n_out: int, rng: np.random.Generator) -> list[np.ndarray]:
    sizes = [(width, width), (width, width), (width, n_out)]
    params = []
    for fan_in, fan_out in sizes:
        params.append(rng.uniform(-1, 1, (fan_in, fan_out)).astype(np.float32) / np.sqrt(fan_in, dtype=np.float32))
        params.append(np.zeros(fan_out, dtype=np.float32))
    return params


def numpy_step(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, lr: float) -> float:
    w1, b1, w2, b2, w3, b3 = params
    h1 = x @ w1 + b1
    a1 = np.maximum(h1, 0)
    h2 = a1 @ w2 + b2
    a2 = np.maximum(h2, 0)
    out = a2 @ w3 + b3
    diff = out - y
    loss = float((diff * diff).mean())
    dout = diff * np.float32(2 / diff.size)
    dw3, db3 = a2.T @ dout, dout.sum(0)
    da2 = dout @ w3.T
    dh2 = da2 * (h2 > 0)
    dw2, db2 = a1.T @ dh2, dh2.sum(0)
    da1 = dh2 @ w2.T
    dh1 = da1 * (h1 > 0)
    dw1, db1 = x.T @ dh1, dh1.sum(0)
    for p, g in zip(params, (dw1, db1, dw2, db2, dw3, db3)):
        p -= lr * g
    return loss


def tinytensor_step(params: list[tt.Tensor], x: tt.Tensor, y: tt.Tensor, lr: float) -> float:
    w1, b1, w2, b2, w3, b3 = params
    h = (x @ w1 + b1).relu()
    h = (h @ w2 + b2).relu()
    out = h @ w3 + b3
    loss = ((out - y) ** 2).mean()
    for p in params:
        p.grad = None
    loss.backward()
    for p in params:
        p.data -= lr * p.grad
    return loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--outputs", type=int, default=10)
    quick_defaults(ap, steps=3, batch=16, width=32)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.width)).astype(np.float32)
    y = rng.standard_normal((args.batch, args.outputs)).astype(np.float32)
    ref = make_params(args.width, args.outputs, rng)
    ours = [tt.tensor(p.copy(), requires_grad=True) for p in ref]
    tx, ty = tt.tensor(x), tt.tensor(y)

    # same starting point, same math: the losses must agree step by step
    l_ref, l_ours = numpy_step(ref, x, y, 1e-3), tinytensor_step(ours, tx, ty, 1e-3)
    assert abs(l_ref - l_ours) <= 1e-4 * abs(l_ref), (l_ref, l_ours)

    for _ in range(10):  # warm up BLAS and the allocator
        numpy_step(ref, x, y, 1e-3)
        tinytensor_step(ours, tx, ty, 1e-3)

    t_ref, t_ours = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        numpy_step(ref, x, y, 1e-3)
        t1 = time.perf_counter()
        tinytensor_step(ours, tx, ty, 1e-3)
        t2 = time.perf_counter()
        t_ref.append(t1 - t0)
        t_ours.append(t2 - t1)

    ms_ref, ms_ours = statistics.median(t_ref) * 1e3, statistics.median(t_ours) * 1e3
    print(f"3-layer MLP step, batch {args.batch}, width {args.width}, float32, median of {args.steps} steps")
    print(f"  plain NumPy (hand-written backward): {ms_ref:8.3f} ms")
    print(f"  tinytensor (autodiff):               {ms_ours:8.3f} ms")
    print(f"  ratio tinytensor / NumPy:            {ms_ours / ms_ref:8.3f}x   (target <= 1.15x)")


if __name__ == "__main__":
    main()
