"""Grouped-query attention: the fused op with H query heads over Hkv key/value heads,
against the same attention computed the straightforward way (each key/value head
repeated for its G = H / Hkv query heads, by an index in the graph, then multi-head
attention), forward + backward, both in the same run on the same inputs, timed in
turn (fused, repeated, fused, ...) so that a busy machine slows both alike; the
speed-up is the median of the pairs' ratios.

    python bench/gqa.py                  # B=8, T=256, H=8, D=64, causal, on the CPU
    python bench/gqa.py --device cuda
    python bench/gqa.py --reps 5

Also printed: the key/value bytes each version keeps for the backward (the fused
op keeps references to k and v; the repeated version G copies of each) and the
KV cache of a 1024-token generation at these sizes.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinytensor as tt  # noqa: E402
from tinytensor import functional as F  # noqa: E402
from bench_quick import QUICK, quick_defaults  # noqa: E402  (bench/bench_quick.py)
from ops import one_run  # noqa: E402  (bench/ops.py)


def repeated(q, k, v):
    """Multi-head attention over k and v repeated to q's heads (an integer-array index)."""
    heads = np.arange(q.shape[1]) // (q.shape[1] // k.shape[1])
    return F.scaled_dot_product_attention(q, k[:, heads], v[:, heads])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--reps", type=int, default=9)
    quick_defaults(ap, reps=1)
    args = ap.parse_args()
    B, T, H, D = (2, 32, 8, 16) if QUICK else (8, 256, 8, 64)
    rng = np.random.default_rng(0)

    def rand(*shape):
        return tt.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True, device=args.device)

    print(f"device={args.device}  B={B} T={T} H={H} query heads D={D}  float32, causal, "
          f"median of {args.reps} forward+backward runs")
    print(f"{'Hkv':>4s} {'G':>3s} {'fused ms':>9s} {'repeated ms':>12s} {'speed-up':>9s} "
          f"{'k,v kept (fused / repeated)':>28s} {'KV cache, 1024 tokens':>22s}")
    q = rand(B, H, T, D)
    for kv_heads in (8, 4, 2, 1):
        k, v = rand(B, kv_heads, T, D), rand(B, kv_heads, T, D)
        pairs = [(one_run(F.scaled_dot_product_attention, [q, k, v], args.device),
                  one_run(repeated, [q, k, v], args.device)) for _ in range(args.reps + 1)][1:]  # one warm-up
        fused, plain = (statistics.median(t) for t in zip(*pairs))
        ratio = statistics.median(b / a for a, b in pairs)
        groups = H // kv_heads
        kv_bytes = 2 * k.data.nbytes
        cache = 2 * B * kv_heads * 1024 * D * 4
        print(f"{kv_heads:4d} {groups:3d} {fused * 1e3:9.1f} {plain * 1e3:12.1f} {ratio:8.2f}x "
              f"{kv_bytes / 2**20:12.1f} / {groups * kv_bytes / 2**20:.1f} MiB {cache / 2**20:17.0f} MiB")


if __name__ == "__main__":
    main()
