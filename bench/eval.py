"""Perplexity evaluation speed: `python -m gpt eval`'s scorer on a GPT-2-124M-shaped model.

    python bench/eval.py                    100k tokens, context 1024, stride 512 (the defaults of eval)
    BENCH_TOKENS=8192 python bench/eval.py  fewer tokens, for a busy machine
    BENCH_QUICK=1 python bench/eval.py      a tiny model on a few thousand tokens, seconds

Scores random token ids with random weights (the speed does not depend on
either) through gpt.evaluate.score_tokens, then, when torch and transformers
are installed, the same windows through transformers' GPT2LMHeadModel forward
holding the same weights: tokens scored per second for each, their ratio
(target: >= 1.0x), and how closely the two totals of nats agree.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinytensor as tt  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402
from gpt.evaluate import score_tokens, sliding_windows, window_batches  # noqa: E402

from bench_quick import QUICK  # noqa: E402  (bench/bench_quick.py: bench/ is on the path)
if QUICK:
    CONFIG = GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=2, n_embd=32)
    TOKENS = 2048
else:
    CONFIG = GPTConfig()                     # GPT-2 124M: 12 layers, 12 heads, width 768, block 1024
    TOKENS = int(os.environ.get("BENCH_TOKENS", 100_000))
BATCH = 4


def ours(model: GPT, ids: np.ndarray, context: int, stride: int) -> tuple[float, float]:
    """(seconds, total nats)."""
    start = time.perf_counter()
    score = score_tokens(model, ids, context, stride, np.ones(CONFIG.vocab_size, dtype=np.int64), BATCH)
    return time.perf_counter() - start, score.nats


def transformers_forward(model: GPT, ids: np.ndarray, context: int, stride: int) -> tuple[float, float] | None:
    """(seconds, total nats) of GPT2LMHeadModel on the same windows, or None without torch/transformers."""
    try:
        import torch
        from transformers import GPT2LMHeadModel
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        ref = GPT2LMHeadModel.from_pretrained(folder).eval()
    windows = sliding_windows(len(ids), context, stride)
    nats = 0.0
    start = time.perf_counter()
    with torch.inference_mode():
        for inputs, targets in window_batches(ids, windows, BATCH):
            logits = ref(input_ids=torch.from_numpy(inputs)).logits            # (B, T, V)
            t = torch.from_numpy(targets)
            keep = t != -100
            logp = torch.log_softmax(logits[keep].float(), dim=-1)             # (K, V)
            nats -= float(logp.gather(1, t[keep][:, None]).sum())
    return time.perf_counter() - start, nats


def main() -> None:
    tt.manual_seed(0)
    model = GPT(CONFIG).eval()
    ids = np.random.default_rng(0).integers(0, CONFIG.vocab_size, TOKENS)
    context, stride = CONFIG.block_size, CONFIG.block_size // 2
    scored = TOKENS - 1
    print(f"model: {CONFIG.n_layer} layers, width {CONFIG.n_embd}, vocabulary {CONFIG.vocab_size}, "
          f"{model.num_parameters():,} parameters; {TOKENS:,} tokens, context {context}, stride {stride}, "
          f"{len(sliding_windows(TOKENS, context, stride))} windows, {BATCH} per forward")
    seconds, nats = ours(model, ids, context, stride)
    print(f"ours:         {scored / seconds:10,.0f} tokens/s ({seconds:.1f} s), {nats / scored:.4f} nats/token "
          f"(uniform: {math.log(CONFIG.vocab_size):.4f})")
    if QUICK:
        print("transformers: skipped (BENCH_QUICK)")
        return
    ref = transformers_forward(model, ids, context, stride)
    if ref is None:
        print("transformers: not installed (pip install torch transformers for the comparison)")
        return
    ref_seconds, ref_nats = ref
    print(f"transformers: {scored / ref_seconds:10,.0f} tokens/s ({ref_seconds:.1f} s), {ref_nats / scored:.4f} "
          f"nats/token (relative difference {abs(nats - ref_nats) / ref_nats:.1e})")
    print(f"ratio: {ref_seconds / seconds:.2f}x transformers' tokens/s (target >= 1.0x)")


if __name__ == "__main__":
    main()
