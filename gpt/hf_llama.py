"""Hugging Face Llama, Qwen2 and Qwen3 folders, in and out.

    config_from_hf(raw, where)             GPTConfig of a config.json; options we lack are errors
    read_hf_llama(folder, raw)             (GPTConfig, weights by our parameter names)
    write_hf_llama(config, state, folder)  config.json + model.safetensors that transformers opens

Here the three are one architecture (RoPE, SwiGLU, RMS norm, no biases,
grouped-query attention) with two options that tell them apart:

    llama    the base
    qwen2    + biases on the q, k, v projections    (GPTConfig.qkv_bias)
    qwen3    + RMS norm on each query and key head  (GPTConfig.qk_norm)

Weights map name for name; both sides keep matrices as (out, in), so nothing
is transposed. HF's three q, k, v projections are the row blocks of our one
c_attn, in that order:

    model.embed_tokens.weight                       wte.weight
    model.layers.N.input_layernorm.weight           h.N.ln_1.weight
    model.layers.N.self_attn.{q,k,v}_proj.{weight,bias}
                                                    h.N.attn.c_attn rows [0, HD), [HD, (H+Hkv)D), [(H+Hkv)D, (H+2Hkv)D)
    model.layers.N.self_attn.{q,k}_norm.weight      h.N.attn.{q,k}_norm.weight
    model.layers.N.self_attn.o_proj.weight          h.N.attn.c_proj.weight
    model.layers.N.post_attention_layernorm.weight  h.N.ln_2.weight
    model.layers.N.mlp.{gate,up,down}_proj.weight   h.N.mlp.{c_gate,c_fc,c_proj}.weight   (silu(gate) * up)
    model.norm.weight                               ln_f.weight
    lm_head.weight                                  lm_head.weight (an untied head only)

The RoPE convention: gpt/rope.py rotates the pairs (x[i], x[i + D/2]), which
is what HF's Llama does (`rotate_half`), and HF's checkpoints store their q
and k rows for that layout (its conversion script permuted Meta's
interleaved-pair rows once, for good). So the rows are copied as they are, on
the way in and on the way out; an implementation rotating interleaved pairs
(x[2i], x[2i + 1]) would have to permute them both ways.

Weights are read from model.safetensors or from the shards that
model.safetensors.index.json lists; bfloat16 (how most of these checkpoints
ship, and a type NumPy lacks) becomes float32 exactly. Never a pickle.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from tinytensor import save

from .config import GPTConfig
from .files import (CONFIG_FILE, MODEL_FILE, config_float, config_int, inside, read_json_object,
                    read_safetensors_header, write_json)
from .rope import LLAMA3_KEYS

INDEX_FILE = "model.safetensors.index.json"
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
# buffers some checkpoints saved beside the weights (RoPE's frequencies, rebuilt from the config)
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
EMBED = "model.embed_tokens.weight"

# safetensors dtype -> NumPy dtype of its bytes; BF16's bytes are read as uint16 and widened
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def _rope(raw: dict, where: str) -> tuple[float, dict | None]:
    """RoPE's theta, top-level `rope_theta` (older transformers) or inside `rope_parameters` /
    `rope_scaling` (newer), and Llama 3's scaling (GPTConfig.rope_scaling) or None; any other
    scaling is refused."""
    theta, scaling = raw.get("rope_theta", 10000.0), None
    for key in ("rope_scaling", "rope_parameters"):
        params = raw.get(key)
        if params is None:
            continue
        if not isinstance(params, dict):
            raise ValueError(f"{where}: {key} must be an object, got {params!r}")
        kind = params.get("rope_type", params.get("type", "default"))
        if kind not in ("default", "llama3"):
            raise ValueError(f"{where}: {key} of type {kind!r} is not supported, only plain RoPE ('default') and "
                             "Llama 3's ('llama3'): positions would be encoded differently from the checkpoint's")
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError(f"{where}: partial_rotary_factor {params['partial_rotary_factor']} is not supported "
                             "(RoPE here rotates every feature of a head)")
        if kind == "llama3":
            missing = [k for k in LLAMA3_KEYS if k not in params]
            if missing:
                raise ValueError(f"{where}: {key} of type 'llama3' lacks {missing}")
            scaling = {"rope_type": "llama3", **{k: params[k] for k in LLAMA3_KEYS}}
        theta = params.get("rope_theta", theta)
    return config_float({"rope_theta": theta}, "rope_theta", where, 10000.0), scaling


def _refuse_unsupported(raw: dict, kind: str, where: str) -> None:
    """ValueError naming the first option of config.json that this GPT cannot compute."""
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{where}: hidden_act {act!r} is not supported (SwiGLU's gate here is silu)")
    if raw.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"{where}: partial_rotary_factor {raw['partial_rotary_factor']} is not supported "
                         "(RoPE here rotates every feature of a head)")
    if kind != "qwen2" and raw.get("attention_bias"):
        raise ValueError(f"{where}: attention_bias: true (biases on q, k, v and o) is not supported; "
                         "only Qwen2's biases on q, k and v are")
    if raw.get("mlp_bias"):
        raise ValueError(f"{where}: mlp_bias: true is not supported (the MLP here has no biases)")
    if raw.get("use_sliding_window"):
        raise ValueError(f"{where}: use_sliding_window: true is not supported (attention here sees every "
                         "earlier position)")
    windowed = sorted({t for t in raw.get("layer_types") or () if t != "full_attention"})
    if windowed:
        raise ValueError(f"{where}: layer_types {windowed} are not supported, only 'full_attention'")
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if raw.get(key):
            raise ValueError(f"{where}: {key}: {raw[key]} means a mixture of experts, which is not supported")


def config_from_hf(raw: dict, where: str) -> GPTConfig:
    """The GPTConfig of a Llama, Qwen2 or Qwen3 config.json (`where` names it in errors)."""
    kind = raw["model_type"]
    _refuse_unsupported(raw, kind, where)
    need = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings")
    missing = [k for k in need if k not in raw]
    if missing:
        raise ValueError(f"{where} lacks the {kind} fields {missing}")
    n_embd, n_head = config_int(raw, "hidden_size", where), config_int(raw, "num_attention_heads", where)
    head_dim = config_int(raw, "head_dim", where, None)
    if head_dim is not None and n_embd % n_head == 0 and head_dim == n_embd // n_head:
        head_dim = None                                   # the one implied by hidden_size / heads
    n_kv_head = config_int(raw, "num_key_value_heads", where, None)
    theta, scaling = _rope(raw, where)
    return GPTConfig(
        vocab_size=config_int(raw, "vocab_size", where), block_size=config_int(raw, "max_position_embeddings", where),
        n_layer=config_int(raw, "num_hidden_layers", where), n_head=n_head, n_embd=n_embd,
        n_kv_head=None if n_kv_head in (None, n_head) else n_kv_head, head_dim=head_dim,
        intermediate_size=config_int(raw, "intermediate_size", where), pos="rope", mlp="swiglu", norm="rmsnorm",
        bias=False, norm_eps=config_float(raw, "rms_norm_eps", where, 1e-6), rope_base=theta, rope_scaling=scaling,
        qk_norm=kind == "qwen3", qkv_bias=kind == "qwen2",
        tie_embeddings=bool(raw.get("tie_word_embeddings", False)),   # False is the default of all three
    )


def hf_config(cfg: GPTConfig, kind: str) -> dict:
    """config.json of `kind` for cfg; theta is written in both layouts, so old and new transformers read it."""
    raw = {
        "model_type": kind, "architectures": [ARCHITECTURES[kind]], "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd, "intermediate_size": cfg.mlp_hidden, "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_size,
        "max_position_embeddings": cfg.block_size, "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_base, **(cfg.rope_scaling or {})},
        "tie_word_embeddings": cfg.tie_embeddings, "hidden_act": "silu", "torch_dtype": "float32",
    }
    if cfg.rope_scaling:
        raw["rope_scaling"] = raw["rope_parameters"]       # where transformers before 4.56 reads it
    if kind != "qwen2":
        raw["attention_bias"] = False
    if kind == "llama":
        raw["mlp_bias"] = False
    else:
        raw["use_sliding_window"] = False
    return raw


# our name -> the file's, for the two layouts of a Llama-family model ({i}: the layer, {p}: q, k or v)
HF_NAMES = {"wte.weight": EMBED, "ln_1.weight": "model.layers.{i}.input_layernorm.weight",
            "attn.c_attn": "model.layers.{i}.self_attn.{p}_proj", "attn.q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
            "attn.k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
            "attn.c_proj.weight": "model.layers.{i}.self_attn.o_proj.weight",
            "ln_2.weight": "model.layers.{i}.post_attention_layernorm.weight",
            "mlp.c_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
            "mlp.c_fc.weight": "model.layers.{i}.mlp.up_proj.weight",
            "mlp.c_proj.weight": "model.layers.{i}.mlp.down_proj.weight",
            "ln_f.weight": "model.norm.weight", "lm_head.weight": "lm_head.weight"}


def llama_layout(cfg: GPTConfig, names: dict[str, str]) -> dict[str, tuple[str, slice | None, tuple[int, ...]]]:
    """File name -> (our parameter name, the rows of it that the file's tensor is, that tensor's
    numpy shape), for every weight of a Llama-family model with config cfg, in file order;
    `names` gives the file's names of ours (HF_NAMES, gpt/gguf.py's GGUF_NAMES)."""
    C, H, Hkv, D = cfg.n_embd, cfg.n_head, cfg.kv_heads, cfg.head_size
    V, M = cfg.vocab_size, cfg.mlp_hidden
    layout: dict[str, tuple[str, slice | None, tuple[int, ...]]] = {names["wte.weight"]: ("wte.weight", None, (V, C))}
    rows = {"q": slice(0, H * D), "k": slice(H * D, (H + Hkv) * D), "v": slice((H + Hkv) * D, (H + 2 * Hkv) * D)}
    for i in range(cfg.n_layer):
        def put(ours: str, shape: tuple[int, ...]) -> None:
            layout[names[ours].format(i=i)] = (f"h.{i}.{ours}", None, shape)

        put("ln_1.weight", (C,))
        for p, part in rows.items():
            n, qkv = part.stop - part.start, names["attn.c_attn"].format(i=i, p=p)
            layout[qkv + ".weight"] = (f"h.{i}.attn.c_attn.weight", part, (n, C))
            if cfg.qkv_bias:
                layout[qkv + ".bias"] = (f"h.{i}.attn.c_attn.bias", part, (n,))
        if cfg.qk_norm:
            put("attn.q_norm.weight", (D,))
            put("attn.k_norm.weight", (D,))
        put("attn.c_proj.weight", (C, H * D))
        put("ln_2.weight", (C,))
        put("mlp.c_gate.weight", (M, C))
        put("mlp.c_fc.weight", (M, C))
        put("mlp.c_proj.weight", (C, M))
    layout[names["ln_f.weight"]] = ("ln_f.weight", None, (C,))
    if not cfg.tie_embeddings:
        layout[names["lm_head.weight"]] = ("lm_head.weight", None, (V, C))
    return layout


def hf_layout(cfg: GPTConfig) -> dict[str, tuple[str, slice | None, tuple[int, ...]]]:
    """HF name -> (our parameter name, the rows of it that the HF weight is, the HF weight's shape)."""
    return llama_layout(cfg, HF_NAMES)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """name -> array of a safetensors file, memory-mapped; bfloat16 is widened to float32
    exactly (its 16 bits are the top half of a float32's). The header is checked entry by
    entry first (gpt.files.read_safetensors_header)."""
    entries, offset = read_safetensors_header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=offset) if path.stat().st_size > offset \
        else np.zeros(0, np.uint8)
    arrays = {}
    for name, e in entries.items():
        dtype = _DTYPES.get(e.dtype)
        if dtype is None:
            raise ValueError(f"{path}: {name} has dtype {e.dtype}; weights must be F32, F16, BF16 or F64")
        arr = data[e.start:e.end].view(dtype).reshape(e.shape)
        arrays[name] = (arr.astype(np.uint32) << 16).view(np.float32) if e.dtype == "BF16" else arr
    return arrays


def read_hf_weights(folder: Path) -> dict[str, np.ndarray]:
    """Every weight of the folder: model.safetensors, or each shard that the index names
    (every shard inside the folder: gpt.files.inside)."""
    if (folder / MODEL_FILE).is_file():
        return read_safetensors(folder / MODEL_FILE)
    if not (folder / INDEX_FILE).is_file():
        raise FileNotFoundError(f"{folder} has neither {MODEL_FILE} nor {INDEX_FILE} (only safetensors weights "
                                "are read, never pickles such as pytorch_model.bin)")
    weight_map = read_json_object(folder / INDEX_FILE).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{folder / INDEX_FILE} has no 'weight_map' object: the file is corrupt")
    shards = {}
    for tensor, shard in weight_map.items():
        shards[shard] = inside(folder, shard, f"{folder / INDEX_FILE} (weight_map[{tensor!r}])")
    weights: dict[str, np.ndarray] = {}
    for shard in sorted(shards):
        if not shards[shard].is_file():
            raise FileNotFoundError(f"{folder} lacks {shard}, a shard that {INDEX_FILE} lists")
        weights.update(read_safetensors(shards[shard]))
    return weights


def _listed(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_hf_llama(folder: Path, raw: dict) -> tuple[GPTConfig, dict[str, Any]]:
    """(config, weights by our names) of a Llama, Qwen2 or Qwen3 folder. Every weight the
    config implies must be there, with its shape, and no other: errors name each one."""
    config = config_from_hf(raw, str(folder / CONFIG_FILE))
    tensors = {k: v for k, v in read_hf_weights(folder).items() if not k.endswith(IGNORED_SUFFIXES)}
    # counted before the layout of every layer is listed: a config.json may claim 100000 layers
    layers = {int(m.group(1)) for k in tensors if (m := re.match(r"model\.layers\.(\d+)\.", k))}
    if layers != set(range(config.n_layer)):
        raise ValueError(f"{folder / CONFIG_FILE} declares num_hidden_layers {config.n_layer}, the weights "
                         f"carry {len(layers)} layers")
    if config.tie_embeddings and "lm_head.weight" in tensors:
        head = tensors.pop("lm_head.weight")
        if EMBED in tensors and not np.array_equal(head, tensors[EMBED]):
            raise ValueError(f"{folder}: lm_head.weight differs from {EMBED}, but config.json says "
                             "tie_word_embeddings: true (set it to false for an untied head)")
    layout = hf_layout(config)
    missing = [name for name in layout if name not in tensors]
    unexpected = [name for name in tensors if name not in layout]
    misshaped = [f"{name} {tuple(tensors[name].shape)} (expected {shape})"
                 for name, (_, _, shape) in layout.items() if name in tensors and tuple(tensors[name].shape) != shape]
    if missing or unexpected or misshaped:
        problems = [f"{label}: {_listed(names)}" for label, names in
                    (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)) if names]
        raise ValueError(f"the weights in {folder} do not fit its config.json ({raw['model_type']}, "
                         f"{config.n_layer} layers): " + "; ".join(problems))
    pieces: dict[str, list[np.ndarray]] = {}
    for name, (ours, _, _) in layout.items():            # q, k, v in row order: the layout lists them so
        pieces.setdefault(ours, []).append(tensors[name])
    state = {ours: parts[0] if len(parts) == 1 else np.concatenate(parts) for ours, parts in pieces.items()}
    return config, state


def write_hf_llama(config: GPTConfig, state: dict[str, Any], folder: Path, kind: str) -> None:
    """Write the model as a Hugging Face folder of `kind` (llama, qwen2 or qwen3)."""
    tensors = {name: state[ours][rows] if rows is not None else state[ours]
               for name, (ours, rows, _) in hf_layout(config).items()}
    save(tensors, folder / MODEL_FILE)                    # save() copies to the CPU in C order
    write_json(folder / CONFIG_FILE, hf_config(config, kind))
