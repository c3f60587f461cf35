"""A real model, end to end: SmolLM2-135M-Instruct from its GGUF file and from the Hugging Face
folder that `python -m gpt export` writes of it; load time, prompt tokens/s (the prompt in one
forward that fills the KV cache) and generation tokens/s (greedy, one token per step with the
cache), against transformers on the same two sources when it is installed (it reads the GGUF
with the same gguf package and dequantizes it to float32 too).

    python bench/real_model.py                       # ../shared/data/models/SmolLM2-135M-Instruct.Q4_1.gguf
    python bench/real_model.py --gguf X.gguf --new-tokens 64
    BENCH_QUICK=1 python bench/real_model.py         # a tiny GGUF written here; no transformers, no ../shared

Each figure is the best of --reps runs (load: one run each, since the first load warms the disk cache
for the others and both libraries get it warm).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tinytensor as tt  # noqa: E402
from bench_quick import QUICK  # noqa: E402  (bench/bench_quick.py: bench/ is on the path)
from gpt.train.folders import export_folder  # noqa: E402
from gpt.train.inference import load_for_inference  # noqa: E402

SMOLLM2 = ROOT.parent / "shared" / "data" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = ("<|im_start|>user\nWrite a short story about a robot who learns to paint, in three paragraphs."
          "<|im_end|>\n<|im_start|>assistant\n")


def write_tiny_gguf(path: Path) -> None:
    """A 2-layer Llama with a byte-level vocabulary, Q8_0 matrices, as the gguf package writes it."""
    import gguf
    from gguf.quants import quantize

    from bpe.gpt2 import byte_to_char

    rng = np.random.default_rng(0)
    V, C, M, H, Hkv, L = 257, 64, 128, 4, 2, 2
    w = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((w.add_block_count, L), (w.add_context_length, 256), (w.add_embedding_length, C),
                       (w.add_feed_forward_length, M), (w.add_head_count, H), (w.add_head_count_kv, Hkv),
                       (w.add_layer_norm_rms_eps, 1e-5), (w.add_vocab_size, V)):
        add(value)
    show = byte_to_char()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list([show[b] for b in range(256)] + ["<|endoftext|>"])
    w.add_token_types([1] * 256 + [3])
    w.add_token_merges([])
    D = C // H
    shapes = {"token_embd.weight": (V, C), "output_norm.weight": (C,)}
    for i in range(L):
        shapes |= {f"blk.{i}.attn_norm.weight": (C,), f"blk.{i}.attn_q.weight": (H * D, C),
                   f"blk.{i}.attn_k.weight": (Hkv * D, C), f"blk.{i}.attn_v.weight": (Hkv * D, C),
                   f"blk.{i}.attn_output.weight": (C, H * D), f"blk.{i}.ffn_norm.weight": (C,),
                   f"blk.{i}.ffn_gate.weight": (M, C), f"blk.{i}.ffn_up.weight": (M, C),
                   f"blk.{i}.ffn_down.weight": (C, M)}
    for name, shape in shapes.items():
        if len(shape) == 1:
            w.add_tensor(name, np.ones(shape, np.float32))
        else:
            values = (0.05 * rng.standard_normal(shape)).astype(np.float32)
            w.add_tensor(name, quantize(values, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def ours(source: Path, prompt: str, new_tokens: int, reps: int) -> tuple[float, float, float, list[int]]:
    """(load s, prompt tok/s, generation tok/s, greedy ids) of our GPT on `source`."""
    start = time.perf_counter()
    model, tok = load_for_inference(source, say=lambda _: None)
    load = time.perf_counter() - start
    ids = np.array([tok.encode(prompt, allowed_special="all")])
    fill, step = [], []
    with tt.no_grad():
        for _ in range(reps):
            caches = model.new_caches(1)
            start = time.perf_counter()
            logits = model(ids, caches=caches, last_only=True)
            fill.append(time.perf_counter() - start)
            out = []
            start = time.perf_counter()
            for _ in range(new_tokens):
                nxt = int(logits.numpy()[0, -1].argmax())
                out.append(nxt)
                logits = model(np.array([[nxt]]), caches=caches, last_only=True)
            step.append(time.perf_counter() - start)
    return load, ids.shape[1] / min(fill), new_tokens / min(step), out


def transformers_run(folder: Path, gguf_file: str | None, prompt: str, new_tokens: int,
                     reps: int) -> tuple[float, float, float, list[int]]:
    """The same figures for transformers' AutoModelForCausalLM on the same source (float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32).eval()
    load = time.perf_counter() - start
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
    fill, step = [], []
    with torch.no_grad():
        for _ in range(reps):
            start = time.perf_counter()
            out = model(ids, use_cache=True)
            fill.append(time.perf_counter() - start)
            past, logits, new = out.past_key_values, out.logits, []
            start = time.perf_counter()
            for _ in range(new_tokens):
                nxt = int(logits[0, -1].argmax())
                new.append(nxt)
                out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits
            step.append(time.perf_counter() - start)
    return load, ids.shape[1] / min(fill), new_tokens / min(step), new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", type=Path, default=SMOLLM2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gguf_path = args.gguf
        if QUICK:
            gguf_path = Path(tmp) / "tiny.gguf"
            write_tiny_gguf(gguf_path)
            args.new_tokens, args.reps = 8, 1
        elif not gguf_path.is_file():
            sys.exit(f"no GGUF at {gguf_path}: give --gguf, or run with BENCH_QUICK=1")
        prompt = "Once upon a time" if QUICK else PROMPT
        rows = [("ours, GGUF", ours(gguf_path, prompt, args.new_tokens, args.reps))]   # first: nothing cached
        hf = Path(tmp) / "hf"
        model, tok = load_for_inference(gguf_path, say=lambda _: None)
        export_folder(model, tok, hf)
        del model
        rows.append(("ours, exported folder", ours(hf, prompt, args.new_tokens, args.reps)))
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
            have_transformers = not QUICK
        except ImportError:
            have_transformers = False
        if have_transformers:
            rows += [("transformers, GGUF", transformers_run(gguf_path.parent, gguf_path.name, prompt,
                                                               args.new_tokens, args.reps)),
                     ("transformers, exported folder", transformers_run(hf, None, prompt, args.new_tokens,
                                                                        args.reps))]
    print(f"{gguf_path.name}: prompt of {len(tok.encode(prompt, allowed_special='all'))} tokens, "
          f"{args.new_tokens} greedy tokens, best of {args.reps}; float32 on the CPU")
    print(f"{'':32s} {'load s':>8s} {'prompt tok/s':>13s} {'gen tok/s':>10s}  same greedy ids as ours (GGUF)")
    reference = rows[0][1][3]
    for name, (load, fill, gen, ids) in rows:
        print(f"{name:32s} {load:8.2f} {fill:13.1f} {gen:10.1f}  {ids == reference}")
    if have_transformers:
        for source, (a, b) in (("GGUF", (0, 2)), ("exported folder", (1, 3))):
            ours_row, theirs = rows[a][1], rows[b][1]
            print(f"{source}: load {theirs[0] / ours_row[0]:.2f}x faster, generation "
                  f"{ours_row[2] / theirs[2]:.2f}x transformers' tokens/s")
    else:
        print("(transformers not run: " + ("BENCH_QUICK" if QUICK else "not installed") + ")")


if __name__ == "__main__":
    main()
