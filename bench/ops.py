"""Time each fused op of tinytensor.functional against the same math composed
from tinytensor primitives (tinytensor.reference), forward + backward, at the
shapes of a small GPT.

    python bench/ops.py                  # B=8, T=256, C=384, H=6, V=8192 on the CPU
    python bench/ops.py --device cuda    # the same on a GPU (CuPy)
    python bench/ops.py --reps 3         # fewer repetitions

Every time is the median of --reps runs of forward + backward (after one
warm-up run), both versions in the same process on the same inputs, with
malloc keeping freed memory as in training (tt.tune_allocator, which
train.py calls). Also printed: cross-entropy at GPT-2's V=50257 against the
LM head's matmuls, and the peak memory that attention's backward allocates
(CPU only, traced with tracemalloc, which NumPy reports its data allocations
to; checked below).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinytensor as tt  # noqa: E402
from tinytensor import functional as F  # noqa: E402
from bench_quick import QUICK, quick_defaults  # noqa: E402  (bench/bench_quick.py: this script's folder)
from tinytensor import reference as R  # noqa: E402
from tinytensor.backend import get_array_module  # noqa: E402


def dropout_composed(x, p):
    keep = (tt.rand(*x.shape, device=x.device) >= p).data   # the project's uniform draw, then the mask
    return R.dropout(x, p, keep)


# ---- timing ---------------------------------------------------------------------
def sync(device: str) -> None:
    if device == "cuda":
        import cupy
        cupy.cuda.Device().synchronize()


def one_run(fn, inputs, device: str) -> float:
    """Seconds of y = fn(*inputs); y.backward(ones)."""
    for t in inputs:
        t.grad = None
    sync(device)
    start = time.perf_counter()
    y = fn(*inputs)
    y.backward(None if y.size == 1 else get_array_module(y.data).ones_like(y.data))
    sync(device)
    return time.perf_counter() - start


def fwd_bwd_time(fn, inputs, reps: int, device: str) -> float:
    """Median seconds of y = fn(*inputs); y.backward(ones), after one warm-up run."""
    return statistics.median([one_run(fn, inputs, device) for _ in range(reps + 1)][1:])


def node_backward(y) -> None:
    """Run the backward of the node that made scalar y, with dL/dy = 1."""
    y._ctx.backward(get_array_module(y.data).ones_like(y.data))


def median_time(fn, reps: int, device: str) -> float:
    times = []
    for i in range(reps + 1):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_cross_entropy(rand, rng, N2: int, C: int, reps: int, dev: str) -> None:
    """Cross-entropy at GPT-2's vocabulary against the LM head's matmuls (a function, so that
    its (N, V) arrays are freed before the memory measurement)."""
    V2 = 50257
    logits2 = rand(N2, V2, scale=2.0)
    targets2 = rng.integers(0, V2, size=N2)
    # the node's own forward + backward: in a model its gradient goes to the LM head's
    # matmuls, not into a leaf's .grad (which would add a copy of all N x V values)
    t_ce = median_time(lambda: node_backward(F.cross_entropy(logits2, targets2)), reps, dev)
    xp = get_array_module(logits2.data)
    hid, wte2, g2 = rand(N2, C).data, rand(V2, C, scale=0.02).data, logits2.data

    def lm_head():
        xp.matmul(hid, wte2.T)   # forward: logits = x W^T   (N, V)
        xp.matmul(g2, wte2)      # dx = g W                  (N, C)
        xp.matmul(g2.T, hid)     # dW = g^T x                (V, C)

    t_mm = median_time(lm_head, reps, dev)
    print(f"\ncross_entropy at V={V2}, N={N2} rows ({N2 * V2 * 4 / 2**20:.0f} MiB of float32 logits):")
    print(f"  cross_entropy fwd+bwd {t_ce * 1e3:.1f} ms; LM head matmuls (N,C)@(C,V) fwd+bwd, 3 matmuls: "
          f"{t_mm * 1e3:.1f} ms; ratio CE / matmul = {t_ce / t_mm:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--ce-rows", type=int, default=2048, help="rows N for the V=50257 cross-entropy check")
    quick_defaults(ap, reps=1, ce_rows=64)
    args = ap.parse_args()
    tt.tune_allocator()
    B, T, C, H, V = (2, 32, 48, 6, 512) if QUICK else (8, 256, 384, 6, 8192)
    D, N = C // H, B * T
    dev, reps = args.device, args.reps
    rng = np.random.default_rng(0)

    def rand(*shape, scale=1.0, grad=True):
        arr = (rng.standard_normal(shape) * scale).astype(np.float32)
        return tt.tensor(arr, requires_grad=grad, device=dev)

    x = rand(B, T, C)
    w = tt.tensor(1 + 0.1 * rng.standard_normal(C), requires_grad=True, dtype=np.float32, device=dev)
    b = rand(C, scale=0.1)
    h = rand(B, T, 4 * C)
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, D)
    logits = rand(N, V, scale=2.0)
    targets = rng.integers(0, V, size=N)
    ids = rng.integers(0, V, size=(B, T))
    wte = rand(V, C, scale=0.02)
    w_fc, b_fc = rand(4 * C, C, scale=0.02), rand(4 * C, scale=0.02)
    att = rand(B, H, T, T)

    cases = [
        ("softmax (B,H,T,T)", lambda a: F.softmax(a), R.softmax, [att]),
        ("log_softmax (N,V)", lambda a: F.log_softmax(a), R.log_softmax, [logits]),
        ("cross_entropy (N,V)", lambda a: F.cross_entropy(a, targets), lambda a: R.cross_entropy(a, targets),
         [logits]),
        ("layer_norm (B,T,C)", F.layer_norm, R.layer_norm, [x, w, b]),
        ("rms_norm (B,T,C)", F.rms_norm, R.rms_norm, [x, w]),
        ("gelu tanh (B,T,4C)", F.gelu, R.gelu, [h]),
        ("silu (B,T,4C)", F.silu, R.silu, [h]),
        ("attention causal (B,H,T,D)", F.scaled_dot_product_attention, R.scaled_dot_product_attention, [q, k, v]),
        ("embedding (B,T)->(B,T,C)", lambda a: F.embedding(ids, a), lambda a: R.embedding(ids, a), [wte]),
        ("linear C->4C (B,T,C)", F.linear, R.linear, [x, w_fc, b_fc]),
        ("dropout p=0.1 (B,T,4C)", lambda a: F.dropout(a, 0.1), lambda a: dropout_composed(a, 0.1), [h]),
    ]
    print(f"device={dev}  B={B} T={T} C={C} H={H} D={D} V={V} N=B*T={N}  float32, "
          f"median of {reps} forward+backward runs")
    print(f"{'op':30s} {'fused ms':>10s} {'composed ms':>12s} {'speed-up':>9s}")
    for name, fused, composed, inputs in cases:
        tf = fwd_bwd_time(fused, inputs, reps, dev)
        tc = fwd_bwd_time(composed, inputs, reps, dev)
        print(f"{name:30s} {tf * 1e3:10.2f} {tc * 1e3:12.2f} {tc / tf:8.2f}x")
    del logits, att

    time_cross_entropy(rand, rng, args.ce_rows, C, reps, dev)

    # ---- peak memory of attention's backward ----
    if dev != "cpu":
        print("\nattention backward memory: measured on the CPU only (tracemalloc)")
        return
    bhtt = B * H * T * T * 4
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    probe = np.empty((B, H, T, T), dtype=np.float32)
    traced = tracemalloc.get_traced_memory()[0] - base
    del probe
    print(f"\ntracemalloc sees NumPy allocations: one (B,H,T,T) float32 array ({bhtt / 2**20:.1f} MiB) "
          f"shows up as {traced / 2**20:.1f} MiB")
    for p in (0.0, 0.1):
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        g = np.ones(out.shape, dtype=np.float32)
        node = out._ctx
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        grads = node.backward(g)
        peak = tracemalloc.get_traced_memory()[1] - before
        outputs = sum(a.nbytes for a in grads)
        print(f"attention backward (dropout_p={p}): peak {peak / bhtt:.2f} x (B,H,T,T) float32 allocated; "
              f"{(peak - outputs) / bhtt:.2f} x beyond its outputs dq, dk, dv")
        del out, node, grads
    out = R.scaled_dot_product_attention(q, k, v)
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    out.backward(np.ones(out.shape, dtype=np.float32))
    peak = tracemalloc.get_traced_memory()[1] - before
    print(f"composed attention, whole backward (for contrast): peak {peak / bhtt:.2f} x (B,H,T,T) float32")
    tracemalloc.stop()


if __name__ == "__main__":
    main()
