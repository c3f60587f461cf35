"""AdamW's step over a GPT's parameters: flat storage against one parameter at a time.

The flat optimizer updates runs of parameters side by side in one contiguous
array, in cache-sized chunks; the reference gives each parameter an optimizer
of its own and updates it in whole-array passes, so every update touches one
parameter alone (what a step did before flat storage). Both get the same
gradients; the results are checked to be identical, then the two take turns
being timed.

    python bench/optim.py [--configs nano mini] [--steps 20]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench_quick import quick_defaults  # noqa: E402  (bench/bench_quick.py, before the path changes)

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402
from tinytensor import optim  # noqa: E402

VOCAB = {"nano": 65, "mini": 50257}


def optimizers(cfg: GPTConfig) -> tuple[GPT, list[optim.AdamW], GPT, list[optim.AdamW]]:
    models, opts = [], []
    for per_parameter in (False, True):
        tt.manual_seed(0)
        model = GPT(cfg)
        groups = optim.param_groups_for_weight_decay(model, 0.1)
        if per_parameter:
            opts.append([optim.AdamW([{**g, "params": [p]}], lr=3e-4) for g in groups for p in g["params"]])
        else:
            opts.append([optim.AdamW(groups, lr=3e-4)])
        rng = np.random.default_rng(1)
        for p in model.parameters():
            p.grad = rng.standard_normal(p.shape).astype(p.dtype)
        models.append(model)
    return models[0], opts[0], models[1], opts[1]


def step_all(opts: list[optim.AdamW], chunked: bool) -> None:
    chunk = optim._CHUNK
    optim._CHUNK = chunk if chunked else sys.maxsize
    try:
        for opt in opts:
            opt.step()
    finally:
        optim._CHUNK = chunk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["nano", "mini"], choices=sorted(VOCAB))
    ap.add_argument("--steps", type=int, default=20)
    quick_defaults(ap, configs=["nano"], steps=2)
    args = ap.parse_args()
    print(f"{'config':8} {'parameters':>11} {'flat ms':>8} {'per-parameter ms':>17} {'ratio':>6}")
    for name in args.configs:
        cfg = GPTConfig.preset(name, vocab_size=VOCAB[name])
        flat_model, flat, ref_model, ref = optimizers(cfg)
        step_all(flat, chunked=True)
        step_all(ref, chunked=False)
        for p, q in zip(flat_model.parameters(), ref_model.parameters()):
            assert np.array_equal(p.data, q.data), "flat and per-parameter steps differ"
        times: dict[int, list[float]] = {0: [], 1: []}
        for _ in range(args.steps):
            for i, opts in enumerate((flat, ref)):
                t0 = time.perf_counter()
                step_all(opts, chunked=i == 0)
                times[i].append(time.perf_counter() - t0)
        a, b = statistics.median(times[0]), statistics.median(times[1])
        print(f"{name:8} {flat_model.num_parameters():11,d} {a * 1e3:8.2f} {b * 1e3:17.2f} {a / b:5.2f}x")


if __name__ == "__main__":
    main()
