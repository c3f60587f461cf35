"""Train a small MLP with tinytensor on a two-spirals problem, in a few seconds.

Everything here is the engine alone: tensors, the graph, backward(), and a
hand-written SGD step. Run it with `python examples/mlp_demo.py`.
"""
from __future__ import annotations

import numpy as np

import tinytensor as tt


def two_spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t = np.sqrt(rng.uniform(0.05, 1, n)) * 3 * np.pi
    label = rng.integers(0, 2, n)
    sign = np.where(label == 1, 1.0, -1.0)
    xy = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / (3 * np.pi)
    return (xy + rng.normal(0, 0.02, xy.shape)).astype(np.float32), label


def main(steps: int = 1500, width: int = 64, lr: float = 0.3, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    x, label = two_spirals(512, rng)
    y = tt.tensor(np.where(label == 1, 1.0, -1.0)[:, None], dtype=np.float32)
    tt.manual_seed(seed)
    sizes = [(2, width), (width, width), (width, 1)]
    params = []
    for fan_in, fan_out in sizes:
        params.append(tt.randn(fan_in, fan_out) * (1 / np.sqrt(fan_in)))
        params.append(tt.zeros(fan_out))
    for p in params:
        p.requires_grad_()

    xs = tt.tensor(x)
    for step in range(steps + 1):
        h = xs
        for i in range(0, len(params), 2):
            h = h @ params[i] + params[i + 1]
            if i + 2 < len(params):
                h = h.tanh()
        # hinge-style smooth loss: mean of log(1 + exp(-y f(x))), written with primitives
        loss = (1 + (-(y * h)).exp()).log().mean()
        for p in params:
            p.grad = None
        loss.backward()
        for p in params:
            p.data -= lr * p.grad
        if step % 300 == 0:
            acc = float(((h.data > 0) == (label[:, None] == 1)).mean())
            print(f"step {step:5d}  loss {loss.item():.4f}  accuracy {acc:.1%}")
    return acc


if __name__ == "__main__":
    main()
