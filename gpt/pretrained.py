"""Model folders in and out: Hugging Face folders (GPT-2, Llama, Qwen2, Qwen3), and our own;
GGUF files in (gpt/gguf.py).

    read_pretrained(folder)           (GPTConfig, weights) of any of them
    write_hf(config, state, folder)   a Hugging Face folder of the model's family (config.json + model.safetensors)
    hf_model_type(raw)                which Hugging Face family a config.json is (None: one of ours)

Our folders (a training checkpoint, an instruction fine-tune) hold
`config.json` = {"model": GPTConfig fields, ..., "checksums": {file: digest}}
(or the GPTConfig fields alone),
`model.safetensors` and `tokenizer.json`; the checksums, recorded when the
folder was written, are verified before any weight is used.

HF stores GPT-2's projections as `Conv1D` modules, whose weight is (in, out);
our `Linear` keeps PyTorch's (out, in), so those four matrices per block are
transposed on the way in and out. Everything else maps name for name.
Llama, Qwen2 and Qwen3 folders are gpt/hf_llama.py's.
This module turns files into a config and arrays; `GPT.from_pretrained` and
`GPT.save_pretrained` put them into (and take them out of) a model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinytensor import load, save

from .config import GPTConfig
from .files import (CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, check_finite, config_float, config_int, read_json_object,
                    verify_listed, write_json)
from .hf_llama import ARCHITECTURES, read_hf_llama, write_hf_llama

__all__ = ["CONFIG_FILE", "HF_MODEL_TYPES", "MODEL_FILE", "TOKENIZER_FILE", "hf_family", "hf_model_type", "is_gguf",
           "read_config", "read_json_object", "read_pretrained", "write_hf", "write_json"]

HF_MODEL_TYPES = ("gpt2", *ARCHITECTURES)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# buffers of HF's attention module (the causal mask), not weights
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# RoPE's cos and sin tables may take this much even when the weights take less (a tiny model, long context)
ROPE_TABLE_BUDGET = 256 * 2**20

# what each family fixes; an option at another value has no counterpart in it
GPT2_ARCH = dict(pos="learned", mlp="gelu", norm="layernorm", bias=True, n_kv_head=None, head_dim=None,
                 qk_norm=False, qkv_bias=False, tie_embeddings=True)
LLAMA_ARCH = dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False)


def read_config(folder: str | Path) -> dict:
    """The folder's config.json, parsed; errors name the file."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE}: expected a Hugging Face folder (GPT-2, Llama, "
                                "Qwen2, Qwen3: config.json + model.safetensors) or one of our checkpoint folders")
    return read_json_object(path)


def is_gguf(path: str | Path) -> bool:
    """Whether `path` is a GGUF model file (llama.cpp's format, gpt/gguf.py) rather than a folder."""
    return Path(path).suffix.lower() == ".gguf" and not Path(path).is_dir()


def hf_model_type(raw: dict) -> str | None:
    """"gpt2", "llama", "qwen2" or "qwen3" for a Hugging Face config.json, None for one of ours;
    ValueError for a Hugging Face model type that is none of these."""
    kind = raw.get("model_type")
    if kind == "gpt2" or (kind is None and "n_positions" in raw):
        return "gpt2"
    if kind is not None and kind not in HF_MODEL_TYPES:
        raise ValueError(f"model_type {kind!r} is not supported: Hugging Face folders of {', '.join(HF_MODEL_TYPES)} are")
    return kind


def read_pretrained(folder: str | Path, **overrides: Any) -> tuple[GPTConfig, dict[str, Any]]:
    """(config, weights by our parameter names) from a Hugging Face folder (GPT-2, Llama,
    Qwen2, Qwen3), a GGUF file (gpt/gguf.py) or one of our folders. `overrides` may change
    training-only settings such as dropout."""
    folder = Path(folder)
    gguf = is_gguf(folder)
    raw = {} if gguf else read_config(folder)
    kind = hf_model_type(raw)
    if gguf:
        from .gguf import read_gguf      # the gguf package is an optional extra

        config, state = read_gguf(folder)
    elif kind == "gpt2":
        config, state = _read_hf_gpt2(folder, raw)
    elif kind is not None:
        config, state = read_hf_llama(folder, raw)
    elif isinstance(raw.get("model"), dict) or {"vocab_size", "n_embd", "n_layer"} <= raw.keys():
        config, state = _read_ours(folder, raw)
    else:
        raise ValueError(f"{folder / CONFIG_FILE} is neither a Hugging Face config (a model_type of "
                         f"{', '.join(HF_MODEL_TYPES)}) nor one of ours (a 'model' object): "
                         "give a Hugging Face folder or a checkpoint folder")
    if overrides:
        config = GPTConfig.from_dict({**config.to_dict(), **overrides})
    check_fits(config, state, str(folder if gguf else folder / CONFIG_FILE))   # a GGUF file holds its own config
    check_finite(state, str(folder))
    return config, state


def _read_ours(folder: Path, raw: dict) -> tuple[GPTConfig, dict[str, Any]]:
    if raw.get("task") == "classify":
        raise ValueError(f"{folder} holds a classifier (a GPT with a class head), not a language model: "
                         "use gpt.train.folders.load_finetuned, or python -m gpt classify")
    if "checksums" in raw:
        checksums = raw["checksums"] if isinstance(raw["checksums"], dict) else {}
        verify_listed(folder, {k: v for k, v in checksums.items() if k == MODEL_FILE}, CONFIG_FILE)
    weights = folder / MODEL_FILE
    if not weights.is_file():
        hint = (f"it holds LoRA adapters over {raw['lora']['base']}: load it with gpt.train.folders.load_finetuned"
                if raw.get("lora") else "it is incomplete")
        raise FileNotFoundError(f"{folder} has no {MODEL_FILE}: {hint}")
    model = raw.get("model", raw)
    if not isinstance(model, dict):
        raise ValueError(f"{folder / CONFIG_FILE}: 'model' must be an object of GPTConfig fields")
    return GPTConfig.from_dict(model), load(weights)


def _read_hf_gpt2(folder: Path, hf: dict) -> tuple[GPTConfig, dict[str, Any]]:
    where = str(folder / CONFIG_FILE)
    missing = [k for k in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size") if k not in hf]
    if missing:
        raise ValueError(f"{where} lacks the GPT-2 fields {missing}")
    n_embd, inner = config_int(hf, "n_embd", where), config_int(hf, "n_inner", where, None)
    config = GPTConfig(vocab_size=config_int(hf, "vocab_size", where), block_size=config_int(hf, "n_positions", where),
                       n_layer=config_int(hf, "n_layer", where), n_head=config_int(hf, "n_head", where), n_embd=n_embd,
                       norm_eps=config_float(hf, "layer_norm_epsilon", where, 1e-5),
                       bias=True, intermediate_size=None if inner in (None, 4 * n_embd) else inner)
    weights_path = folder / MODEL_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{folder} has no {MODEL_FILE} (only safetensors weights are read, never pickles)")
    state: dict[str, Any] = {}
    lm_head = None
    # the keys may carry the `transformer.` prefix or not; lm_head.weight, tied to wte, may be absent
    for key, value in load(weights_path).items():
        name = key[len("transformer."):] if key.startswith("transformer.") else key
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if name == "lm_head.weight":
            lm_head = value
            continue
        state[name] = value.T if name.endswith(CONV1D) else value
    if lm_head is not None:
        if "wte.weight" not in state:
            state["wte.weight"] = lm_head
        elif not np.array_equal(lm_head, state["wte.weight"]):
            raise ValueError("lm_head.weight differs from wte.weight: this GPT ties them, so an untied head cannot be loaded")
    return config, state


def check_fits(config: GPTConfig, state: dict[str, Any], where: str) -> None:
    """Before a model is built: no size `where` declares may make a weight larger than the one
    the folder holds, so a config.json claiming 10^9 positions or 100000 layers is an error
    naming the field, not an allocation of hundreds of GiB. (Smaller or other shapes are left
    to load_state_dict, which lists every weight that does not fit.) Shapes only."""
    def carried(name: str) -> int:
        return int(np.prod(state[name].shape)) if name in state else 0

    C, qkv = config.n_embd, (config.n_head + 2 * config.kv_heads) * config.head_size
    declared = [("vocab_size / n_embd (hidden_size)", "wte.weight", config.vocab_size * C)]
    if config.pos == "learned":
        declared.append(("n_positions / block_size", "wpe.weight", config.block_size * C))
    layers = {int(name.split(".")[1]) for name in state if name.startswith("h.") and name.split(".")[1].isdigit()}
    if config.n_layer > len(layers):
        raise ValueError(f"{where} declares n_layer {config.n_layer}, the weights carry {len(layers)} layers")
    for i in range(config.n_layer):
        declared += [("n_head, n_kv_head, head_dim", f"h.{i}.attn.c_attn.weight", qkv * C),
                     ("n_inner / intermediate_size", f"h.{i}.mlp.c_fc.weight", config.mlp_hidden * C)]
    for fields_, name, size in declared:
        if size > carried(name):
            raise ValueError(f"{where} declares sizes ({fields_}) that make {name} {size:,} numbers, the weights "
                             f"carry {carried(name):,}: the config does not belong to these weights")
    if config.pos == "rope":       # no weight carries positions: RoPE's tables may cost what the weights do
        table = config.block_size * config.head_size * 4
        budget = max(sum(int(np.prod(v.shape)) * 4 for v in state.values()), ROPE_TABLE_BUDGET)
        if table > budget:
            raise ValueError(f"{where} declares {config.block_size:,} positions (max_position_embeddings): their "
                             f"RoPE tables would take {table / 2**30:.1f} GiB, more than the model itself; give a "
                             "smaller value (GPT.from_pretrained(folder, block_size=N) shortens it)")


def hf_family(config: GPTConfig) -> str:
    """The Hugging Face model_type that computes what a model of this config computes;
    ValueError naming the options that no Hugging Face model has."""
    # n_kv_head = n_head and head_dim = n_embd / n_head are the defaults, spelled out
    implied = dict(n_kv_head=None if config.kv_heads == config.n_head else config.n_kv_head,
                   head_dim=None if config.head_size * config.n_head == config.n_embd else config.head_dim)
    values = {**config.to_dict(), **implied}

    def differ(arch: dict) -> list[str]:
        return [f"{k}={values[k]!r}" for k, v in arch.items() if values[k] != v]

    gpt2, llama = differ(GPT2_ARCH), differ(LLAMA_ARCH)
    if not gpt2:
        return "gpt2"
    if not llama:
        if config.qk_norm and config.qkv_bias:
            raise ValueError("no Hugging Face model has both qk_norm (Qwen3) and qkv_bias (Qwen2): "
                             "this model cannot be exported")
        return "qwen3" if config.qk_norm else "qwen2" if config.qkv_bias else "llama"
    nearest, fixed = (gpt2, GPT2_ARCH) if len(gpt2) < len(llama) else (llama, LLAMA_ARCH)
    family = "GPT-2" if fixed is GPT2_ARCH else "Llama/Qwen"
    raise ValueError(f"no Hugging Face model has this architecture: the nearest, {family}, needs "
                     f"{', '.join(f'{k}={v!r}' for k, v in fixed.items())}, and this model has {', '.join(nearest)}")


def write_hf(config: GPTConfig, state: dict[str, Any], path: str | Path) -> None:
    """Write a model's config and state dict as a Hugging Face folder of its family
    (GPT-2, Llama, Qwen2 or Qwen3), the layout read_pretrained reads."""
    kind = hf_family(config)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if kind != "gpt2":
        write_hf_llama(config, state, folder, kind)
        return
    # save() copies to the CPU in C order, so the transposed views are written as (in, out) arrays
    tensors = {"transformer." + name: arr.T if name.endswith(CONV1D) else arr for name, arr in state.items()}
    save(tensors, folder / MODEL_FILE)
    hf_config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": config.vocab_size,
        "n_positions": config.block_size, "n_ctx": config.block_size, "n_embd": config.n_embd,
        "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": config.mlp_hidden,
        "layer_norm_epsilon": config.norm_eps, "activation_function": "gelu_new",
    }
    write_json(folder / CONFIG_FILE, hf_config)
