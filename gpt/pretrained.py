"""Model folders in and out: Hugging Face GPT-2 folders, and our own.

    read_pretrained(folder)              (GPTConfig, weights) of either kind of folder
    write_hf_gpt2(config, state, folder) a Hugging Face GPT-2 folder (config.json + model.safetensors)

Our folders (a training checkpoint, an instruction fine-tune) hold
`config.json` = {"model": GPTConfig fields, ..., "checksums": {file: digest}}
(or the GPTConfig fields alone),
`model.safetensors` and `tokenizer.json`; the checksums, recorded when the
folder was written, are verified before any weight is used.

HF stores GPT-2's projections as `Conv1D` modules, whose weight is (in, out);
our `Linear` keeps PyTorch's (out, in), so those four matrices per block are
transposed on the way in and out. Everything else maps name for name.
This module turns files into a config and arrays; `GPT.from_pretrained` and
`GPT.save_pretrained` put them into (and take them out of) a model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tinytensor import load, save
from tinytensor.serialize import verify_digests, write_atomically

from .config import GPTConfig

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# buffers of HF's attention module (the causal mask), not weights
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def write_json(path: str | Path, obj: Any) -> None:
    """obj as indented JSON, written atomically."""
    write_atomically(path, json.dumps(obj, indent=2).encode())


def read_json_object(path: Path) -> dict:
    """A JSON file holding an object; ValueError names the file when it does not."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): the file is corrupt") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a JSON object: the file is corrupt")
    return raw


def read_config(folder: str | Path) -> dict:
    """The folder's config.json, parsed; errors name the file."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE}: expected a Hugging Face GPT-2 folder "
                                "(config.json + model.safetensors) or one of our checkpoint folders")
    return read_json_object(path)


def is_hf_gpt2(raw: dict) -> bool:
    return raw.get("model_type") == "gpt2" or "n_positions" in raw


def read_pretrained(folder: str | Path, **overrides: Any) -> tuple[GPTConfig, dict[str, Any]]:
    """(config, weights by our parameter names) from a Hugging Face GPT-2 folder or
    one of ours. `overrides` may change training-only settings such as dropout."""
    folder = Path(folder)
    raw = read_config(folder)
    if is_hf_gpt2(raw):
        config, state = _read_hf_gpt2(folder, raw)
    elif isinstance(raw.get("model"), dict) or {"vocab_size", "n_embd", "n_layer"} <= raw.keys():
        config, state = _read_ours(folder, raw)
    else:
        raise ValueError(f"{folder / CONFIG_FILE} is neither a Hugging Face GPT-2 config (n_positions, n_embd, ...) "
                         "nor one of ours (a 'model' object): give a GPT-2 folder or a checkpoint folder")
    if overrides:
        config = GPTConfig.from_dict({**config.to_dict(), **overrides})
    return config, state


def _read_ours(folder: Path, raw: dict) -> tuple[GPTConfig, dict[str, Any]]:
    if raw.get("task") == "classify":
        raise ValueError(f"{folder} holds a classifier (a GPT with a class head), not a language model: "
                         "use gpt.train.finetune.load_finetuned, or python -m gpt classify")
    if "checksums" in raw:
        verify_digests(folder, {k: v for k, v in raw["checksums"].items() if k == MODEL_FILE},
                       f"{folder / CONFIG_FILE}")
    weights = folder / MODEL_FILE
    if not weights.is_file():
        hint = (f"it holds LoRA adapters over {raw['lora']['base']}: load it with gpt.train.finetune.load_finetuned"
                if raw.get("lora") else "it is incomplete")
        raise FileNotFoundError(f"{folder} has no {MODEL_FILE}: {hint}")
    return GPTConfig.from_dict(raw.get("model", raw)), load(weights)


def _read_hf_gpt2(folder: Path, hf: dict) -> tuple[GPTConfig, dict[str, Any]]:
    missing = [k for k in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size") if k not in hf]
    if missing:
        raise ValueError(f"{folder / CONFIG_FILE} lacks the GPT-2 fields {missing}")
    config = GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                       n_head=hf["n_head"], n_embd=hf["n_embd"], norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                       bias=True)
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


def write_hf_gpt2(config: GPTConfig, state: dict[str, Any], path: str | Path) -> None:
    """Write a model's config and state dict as a Hugging Face GPT-2 folder (the layout read_pretrained reads)."""
    cfg = config
    if (cfg.pos, cfg.mlp, cfg.norm, cfg.bias) != ("learned", "gelu", "layernorm", True):
        raise ValueError("only the plain GPT-2 architecture has a Hugging Face GPT-2 layout "
                         f"(this model has pos={cfg.pos}, mlp={cfg.mlp}, norm={cfg.norm}, bias={cfg.bias})")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    # save() copies to the CPU in C order, so the transposed views are written as (in, out) arrays
    tensors = {"transformer." + name: arr.T if name.endswith(CONV1D) else arr for name, arr in state.items()}
    save(tensors, folder / MODEL_FILE)
    hf_config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size, "n_ctx": cfg.block_size, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
        "n_head": cfg.n_head, "layer_norm_epsilon": cfg.norm_eps, "activation_function": "gelu_new",
    }
    write_json(folder / CONFIG_FILE, hf_config)
