"""GPT training-step speed against its matmul floor (and PyTorch eager), and generation speed.

For each config, one training step (forward, loss, backward, AdamW) is timed,
and so is the "matmul floor": the same step's matrix products alone, as plain
NumPy calls on the same shapes. The ratio step / floor says how much time goes
anywhere but the matmuls. When torch is installed (a benchmark-only extra:
`pip install torch`), the same model in PyTorch eager (bench/torch_gpt.py,
same weights, explicit softmax attention, tanh GELU, AdamW) is timed too. The
three take turns, a few steps each, so noise from a shared machine hits all alike.
Like train.py, the script first calls tt.tune_allocator(), so the step is
timed as training runs it. MFU is model FLOPs per second over the matmul rate NumPy reaches on a large
square product in the same run.

Generation: KV-cache decoding with and without the cache on small models, and
on GPT-2 124M's shape (random weights) against its memory-bandwidth floor
(bytes read per token / measured read bandwidth) and, when `transformers` is
installed, Hugging Face's GPT2LMHeadModel with the same shape.

    python bench/gpt.py                 # nano and mini, then generation
    python bench/gpt.py --configs nano --steps 20 --no-generation
    python bench/gpt.py --configs nano --profile 10 --no-generation   # + tt.profile's table of our step
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Callable

# this script is named like the package it measures: import the package, not itself
from bench_quick import QUICK, quick_defaults  # noqa: E402  (bench/bench_quick.py, before the path changes)
from timing import interleaved_medians  # noqa: E402  (bench/timing.py)

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402
from tinytensor import optim  # noqa: E402

SETUPS = {"nano": dict(batch=12, vocab=65), "mini": dict(batch=8, vocab=50257)}
TARGETS = {"nano": 1.6, "mini": 1.35}
TORCH_TARGET = 1.15
WEIGHT_DECAY, LR = 0.1, 3e-4


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def matmul_floor(cfg: GPTConfig, B: int) -> Callable[[], None]:
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

    return step


MATMUL_N = 256 if QUICK else 2048


def peak_matmul_flops() -> float:
    a = np.random.default_rng(0).standard_normal((MATMUL_N, MATMUL_N)).astype(np.float32)
    t = interleaved_medians([lambda: a @ a], 5)[0]
    return 2 * MATMUL_N ** 3 / t


def train_steps(cfg: GPTConfig, B: int, with_torch: bool) -> list[Callable[[], float]]:
    """Our training step and, with torch, the same step of a torch copy of the same model."""
    tt.manual_seed(0)
    model = GPT(cfg)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))
    y = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))
    steps = []
    if with_torch:
        import torch_gpt
        steps.append(torch_gpt.train_step(model, x, y, WEIGHT_DECAY, LR))
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, WEIGHT_DECAY), lr=LR)

    def step() -> float:
        _, loss = model(x, targets=y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    steps.insert(0, step)
    if with_torch:  # same weights, same data: the first losses must agree
        ours, ref = step(), steps[1]()
        assert abs(ours - ref) <= 1e-4 * abs(ref), f"our loss {ours} and torch's {ref} differ"
    return steps


def read_bandwidth() -> float:
    """Bytes per second that a matrix-vector product with a 256 MiB float32 matrix
    reads: the access pattern of decoding one token (every weight read once)."""
    m = np.ones((8192, 8192), dtype=np.float32)
    v = np.ones(8192, dtype=np.float32)
    t = interleaved_medians([lambda: m @ v], 5)[0]
    return m.nbytes / t


def generation_rates(cfg: GPTConfig, new_tokens: int) -> tuple[float, float]:
    tt.manual_seed(0)
    model = GPT(cfg)
    prompt = np.zeros((1, 1), dtype=np.int64)
    rates = []
    for use_cache in (True, False):
        t0 = time.perf_counter()
        model.generate(prompt, new_tokens, temperature=0, use_cache=use_cache)
        rates.append(new_tokens / (time.perf_counter() - t0))
    return rates[0], rates[1]


def gpt2_generation(new_tokens: int) -> None:
    """GPT-2 124M's shape, random weights: our cached decoding against the bandwidth floor and HF transformers."""
    cfg = GPTConfig.preset("gpt2")
    tt.manual_seed(0)
    model = GPT(cfg)
    prompt = np.zeros((1, 1), dtype=np.int64)
    model.generate(prompt, 2, temperature=0)  # warm-up
    t0 = time.perf_counter()
    model.generate(prompt, new_tokens, temperature=0)
    ours = new_tokens / (time.perf_counter() - t0)
    # each token reads every weight once (wte twice: its row, then the whole tied head; the
    # row is negligible), plus the cached keys and values, on average half the final length
    weights = sum(p.data.nbytes for p in model.parameters())
    kv = 2 * cfg.n_layer * cfg.n_embd * 4 * (new_tokens / 2)
    floor = read_bandwidth() / (weights + kv)
    line = (f"generation, gpt2 124M (random weights), {new_tokens} new tokens, batch 1: {ours:.1f} tokens/s; "
            f"memory-bandwidth ceiling {floor:.1f} tokens/s ({(weights + kv) / 1e6:.0f} MB read per token)")
    if has("transformers") and has("torch"):
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        hf = GPT2LMHeadModel(GPT2Config()).eval()
        ids = torch.zeros((1, 1), dtype=torch.long)
        kwargs = dict(do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
        with torch.no_grad():
            hf.generate(ids, max_new_tokens=2, min_new_tokens=2, **kwargs)
            t0 = time.perf_counter()
            hf.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
        theirs = new_tokens / (time.perf_counter() - t0)
        line += f"; Hugging Face transformers {theirs:.1f} tokens/s: ours / theirs = {ours / theirs:.2f}x (target >= 1x)"
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["nano", "mini"], choices=sorted(SETUPS))
    ap.add_argument("--steps", type=int, default=10, help="timed steps per config (median)")
    ap.add_argument("--gen-tokens", type=int, default=200)
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is installed")
    ap.add_argument("--no-generation", action="store_true")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after timing, profile N of our steps per config and print the table")
    quick_defaults(ap, configs=["nano"], steps=1, no_torch=True, no_generation=True)
    args = ap.parse_args()
    # as train.py does: freed activation memory stays in the process for the next step
    # (without it, page faults took about a quarter of a nano step; tinytensor/backend.py)
    tuned = tt.tune_allocator()
    print(f"malloc keeps freed memory (tt.tune_allocator, as in train.py): {'yes' if tuned else 'no (not glibc)'}")
    with_torch = has("torch") and not args.no_torch
    if with_torch:
        sys.path.insert(1, str(Path(__file__).resolve().parent))
        import torch
        print(f"PyTorch {torch.__version__} eager, {torch.get_num_threads()} threads")

    peak = peak_matmul_flops()
    print(f"NumPy float32 matmul rate ({MATMUL_N}^2 @ {MATMUL_N}^2): {peak / 1e9:.1f} GFLOP/s")
    head = f"{'config':8} {'batch':>5} {'vocab':>6} {'ms/step':>9} {'tokens/s':>9} {'MFU':>6} {'floor ms':>9} {'step/floor':>10}"
    print(head + (f" {'torch ms':>9} {'step/torch':>10}" if with_torch else ""))
    for name in args.configs:
        setup = SETUPS[name]
        cfg = GPTConfig.preset(name, vocab_size=setup["vocab"])
        B, T = 2 if QUICK else setup["batch"], cfg.block_size
        fns = train_steps(cfg, B, with_torch)
        fns.insert(1, matmul_floor(cfg, B))
        step, floor, *ref = interleaved_medians(fns, args.steps)
        flops = GPT(cfg).flops_per_token() * B * T
        line = (f"{name:8} {B:5d} {cfg.vocab_size:6d} {step * 1e3:9.1f} {B * T / step:9.0f} "
                f"{flops / step / peak:6.1%} {floor * 1e3:9.1f} {step / floor:9.2f}x")
        print(line + (f" {ref[0] * 1e3:9.1f} {step / ref[0]:9.2f}x" if ref else ""))
        if args.profile:
            tt.profile_steps(fns[0], args.profile)
    print("targets: step/floor <= " + ", ".join(f"{r}x ({n})" for n, r in TARGETS.items())
          + (f"; step/torch <= {TORCH_TARGET}x (nano)" if with_torch else ""))
    if args.no_generation:
        return

    for name, vocab in (("nano", 65), ("mini", 50257)):
        cfg = GPTConfig.preset(name, vocab_size=vocab, block_size=256)
        cached, uncached = generation_rates(cfg, args.gen_tokens)
        print(f"generation, {name} (vocab {vocab}, block 256), {args.gen_tokens} new tokens after a 1-token prompt: "
              f"{cached:.0f} tokens/s with the KV cache, {uncached:.0f} without: {cached / uncached:.1f}x (target >= 5x)")
    gpt2_generation(min(args.gen_tokens, 100))


if __name__ == "__main__":
    main()
