"""GGUF model files (llama.cpp, Ollama, LM Studio) in: the config and float32 weights.

    read_gguf(path)           (GPTConfig, weights by our parameter names)
    gguf_config(reader)       the GPTConfig of the file's metadata
    gguf_layout(config)       GGUF tensor name -> (our name, its rows in ours, numpy shape)

The `gguf` package (maintained with llama.cpp) reads the format and
dequantizes every block type into float32; nothing here decodes bytes.
Architectures: `llama` (SmolLM2, TinyLlama, Llama 3), `qwen2`, `qwen3`;
the metadata keys are `{arch}.block_count`, `{arch}.embedding_length`, ...
Tensor names, with ggml's shapes reversed into numpy's (out, in):

    token_embd.weight                 wte.weight
    blk.N.attn_norm.weight            h.N.ln_1.weight
    blk.N.attn_{q,k,v}.{weight,bias}  h.N.attn.c_attn rows of q, k, v (as gpt/hf_llama.py's)
    blk.N.attn_{q,k}_norm.weight      h.N.attn.{q,k}_norm.weight                (qwen3)
    blk.N.attn_output.weight          h.N.attn.c_proj.weight
    blk.N.ffn_norm.weight             h.N.ln_2.weight
    blk.N.ffn_{gate,up,down}.weight   h.N.mlp.{c_gate,c_fc,c_proj}.weight
    output_norm.weight                ln_f.weight
    output.weight                     lm_head.weight (absent: the head is tied to token_embd)
    rope_freqs.weight                 GPTConfig.rope_scaling (Llama 3's, see _llama3_scaling)

llama.cpp rotates the interleaved pairs (x[2i], x[2i+1]) of a `llama` head
and its converter permuted each head's q and k rows from Hugging Face's
rotate-half order for that: GGUF row 2i + c of a head is HF row c D/2 + i.
`unpermute` puts them back (docs/rope.md derives why that gives the same
scores). Qwen2 and Qwen3 GGUFs keep HF's order (llama.cpp rotates their
halves), so their rows are copied as they are.

Every size is checked before anything is allocated: the metadata against
itself, each tensor's shape against the config, its bytes against its type's
block size, and a tensor name that maps to nothing is an error naming it.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from bpe.gguf import metadata, open_gguf

from .config import GPTConfig
from .hf_llama import llama_layout
from .rope import rope_frequencies

ARCHITECTURES = ("llama", "qwen2", "qwen3")
# what gguf.quants.dequantize turns into float32 (the types llama.cpp's converters and quantizers write)
MAX_CONTEXT = 1 << 21              # positions; the longest models have about 1M
ROPE_FREQS = "rope_freqs.weight"    # Llama 3's RoPE scaling, read into the config (_llama3_scaling)
TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's permutation of q or k rows (n_head heads of D rows each):
    GGUF row 2i + c of a head becomes row c D/2 + i, Hugging Face's rotate-half order."""
    D = w.shape[0] // n_head
    return w.reshape(n_head, D // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_config(reader: Any) -> GPTConfig:
    """The GPTConfig of a GGUF's metadata; options this GPT cannot compute are errors naming the key."""
    where = reader.data.filename
    arch = metadata(reader, "general.architecture", str)
    if arch not in ARCHITECTURES:
        raise ValueError(f"{where}: general.architecture is {arch!r}; GGUF files of {', '.join(ARCHITECTURES)} "
                         "are supported")

    def get(key: str, kind: type = int, default: Any = ...) -> Any:
        return metadata(reader, f"{arch}.{key}", kind, default)

    if get("expert_count", int, 0):
        raise ValueError(f"{where}: {arch}.expert_count is set: a mixture of experts is not supported")
    scaling = get("rope.scaling.type", str, "none")
    if scaling != "none":
        raise ValueError(f"{where}: {arch}.rope.scaling.type {scaling!r} is not supported, only plain RoPE")
    n_embd, n_head = get("embedding_length"), get("attention.head_count")
    if n_head <= 0 or n_embd <= 0:
        raise ValueError(f"{where}: {arch}.embedding_length and attention.head_count must be positive")
    head_dim = get("attention.key_length", int, n_embd // n_head)
    if get("attention.value_length", int, head_dim) != head_dim:
        raise ValueError(f"{where}: {arch}.attention.value_length differs from key_length, which is not supported")
    if get("rope.dimension_count", int, head_dim) != head_dim:
        raise ValueError(f"{where}: {arch}.rope.dimension_count {get('rope.dimension_count')} is not the head "
                         f"size {head_dim}: partial rotary embeddings are not supported")
    n_kv_head = get("attention.head_count_kv", int, n_head)
    vocab = get("vocab_size", int, None)
    if vocab is None:
        embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
        if embd is None:
            raise ValueError(f"{where} has no token_embd.weight tensor")
        vocab = int(embd.shape[-1])
    context = get("context_length")
    if context > MAX_CONTEXT:      # no tensor backs it, but the rotary tables are allocated for it
        raise ValueError(f"{where}: {arch}.context_length {context:,} is more than {MAX_CONTEXT:,} positions: "
                         "the file is corrupt")
    names = {t.name for t in reader.tensors}
    base = get("rope.freq_base", float, 10000.0)
    return GPTConfig(
        vocab_size=vocab, block_size=context, n_layer=get("block_count"), n_head=n_head,
        n_embd=n_embd, n_kv_head=None if n_kv_head == n_head else n_kv_head,
        head_dim=None if head_dim * n_head == n_embd else head_dim, intermediate_size=get("feed_forward_length"),
        pos="rope", mlp="swiglu", norm="rmsnorm", bias=False, norm_eps=get("attention.layer_norm_rms_epsilon", float),
        rope_base=base, rope_scaling=_llama3_scaling(reader, head_dim, base), qk_norm=arch == "qwen3",
        qkv_bias=arch == "qwen2" and "blk.0.attn_q.bias" in names, tie_embeddings="output.weight" not in names)


def _llama3_scaling(reader: Any, head_dim: int, base: float) -> dict | None:
    """GPTConfig.rope_scaling of a file with a `rope_freqs.weight` tensor (None without one).

    llama.cpp's converter keeps Llama 3's scaling only as those D/2 divisors of
    the frequencies, computed with the low/high frequency factors and original
    context of the config.json (1, 4 and 8192 in every Llama 3.1 and 3.2); the
    largest divisor is the factor. The parameters are those, checked to give
    the file's divisors."""
    from gguf.quants import dequantize

    t = next((t for t in reader.tensors if t.name == ROPE_FREQS), None)
    if t is None:
        return None
    if tuple(int(n) for n in t.shape) != (head_dim // 2,):
        raise ValueError(f"{reader.data.filename}: {ROPE_FREQS} has shape {tuple(t.shape)}, not ({head_dim // 2},)")
    divisors = dequantize(t.data, t.tensor_type).astype(np.float64).ravel()
    scaling = {"rope_type": "llama3", "factor": float(divisors.max()), "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    expected = rope_frequencies(head_dim, base) / rope_frequencies(head_dim, base, scaling)
    if not np.allclose(divisors, expected, rtol=1e-5):
        raise ValueError(f"{reader.data.filename}: {ROPE_FREQS} is not Llama 3's RoPE scaling with factor "
                         f"{scaling['factor']}, frequency factors 1 and 4 and an original context of 8192: "
                         "other scalings are not supported")
    return scaling


GGUF_NAMES = {"wte.weight": "token_embd.weight", "ln_1.weight": "blk.{i}.attn_norm.weight",
              "attn.c_attn": "blk.{i}.attn_{p}", "attn.q_norm.weight": "blk.{i}.attn_q_norm.weight",
              "attn.k_norm.weight": "blk.{i}.attn_k_norm.weight", "attn.c_proj.weight": "blk.{i}.attn_output.weight",
              "ln_2.weight": "blk.{i}.ffn_norm.weight", "mlp.c_gate.weight": "blk.{i}.ffn_gate.weight",
              "mlp.c_fc.weight": "blk.{i}.ffn_up.weight", "mlp.c_proj.weight": "blk.{i}.ffn_down.weight",
              "ln_f.weight": "output_norm.weight", "lm_head.weight": "output.weight"}


def gguf_layout(cfg: GPTConfig) -> dict[str, tuple[str, slice | None, tuple[int, ...]]]:
    """GGUF name -> (our parameter name, the rows of it that the tensor is, the tensor's numpy shape):
    gpt/hf_llama.py's layout under GGUF's names."""
    return llama_layout(cfg, GGUF_NAMES)


def _check_tensors(reader: Any, layout: dict, where: str) -> None:
    """Every tensor the config implies, with its shape, type and byte count, and no other."""
    from gguf.quants import GGML_QUANT_SIZES

    tensors = {t.name: t for t in reader.tensors if t.name != ROPE_FREQS}
    if unmapped := [name for name in tensors if name not in layout]:
        raise ValueError(f"{where}: tensor {unmapped[0]!r} maps to no weight of this model "
                         f"({len(unmapped)} such tensors)")
    if missing := [name for name in layout if name not in tensors]:
        raise ValueError(f"{where} lacks the tensor {missing[0]!r} ({len(missing)} missing)")
    for name, (_, _, shape) in layout.items():
        t = tensors[name]
        kind = t.tensor_type.name
        if kind not in TYPES:
            raise ValueError(f"{where}: tensor {name} is of type {kind}, not one of {', '.join(TYPES)}")
        found = tuple(int(n) for n in reversed(t.shape))            # ggml lists the fastest axis first
        if found != shape:
            raise ValueError(f"{where}: tensor {name} has shape {found}, but the metadata implies {shape}")
        block, size = GGML_QUANT_SIZES[t.tensor_type]
        if shape[-1] % block:
            raise ValueError(f"{where}: tensor {name}'s rows of {shape[-1]} are not whole {kind} blocks of {block}")
        expected = int(np.prod(shape)) // block * size
        if t.data.nbytes != expected:
            raise ValueError(f"{where}: tensor {name} holds {t.data.nbytes:,} bytes, but {kind} {shape} takes "
                             f"{expected:,}: the file is truncated or corrupt")


def read_gguf(path: str | os.PathLike) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    """(config, float32 weights by our parameter names) of a GGUF file; every size is checked first."""
    from gguf.quants import dequantize

    reader = open_gguf(path)
    where = str(path)
    config = gguf_config(reader)
    arch = metadata(reader, "general.architecture", str)
    layout = gguf_layout(config)
    _check_tensors(reader, layout, where)
    state: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        if t.name == ROPE_FREQS:
            continue
        ours, rows, shape = layout[t.name]
        values = dequantize(t.data, t.tensor_type).reshape(shape)
        if arch == "llama" and t.name.endswith(("attn_q.weight", "attn_k.weight")):
            values = unpermute(values, config.n_head if t.name.endswith("attn_q.weight") else config.kv_heads)
        if rows is None:
            state[ours] = np.asarray(values, dtype=np.float32)
            continue
        if ours not in state:                                  # c_attn: q, k and v dequantized into their rows
            full = (config.n_head + 2 * config.kv_heads) * config.head_size
            state[ours] = np.empty((full, *shape[1:]), dtype=np.float32)
        state[ours][rows] = values
    return config, state
