"""Hugging Face GPT-2 folders (config.json + model.safetensors), in and out.

HF stores GPT-2's projections as `Conv1D` modules, whose weight is (in, out);
our `Linear` keeps PyTorch's (out, in), so those four matrices per block are
transposed on the way in and out. Everything else maps name for name.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tinytensor import load, save

from .checkpoint import write_json
from .model import GPT, GPTConfig

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# buffers of HF's attention module (the causal mask), not weights
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def _read_config(folder: Path) -> GPTConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json: expected a Hugging Face GPT-2 folder "
                                "(config.json + model.safetensors)")
    hf = json.loads(path.read_text())
    missing = [k for k in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size") if k not in hf]
    if missing:
        raise ValueError(f"{path} lacks the GPT-2 fields {missing}")
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=hf["n_embd"], norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                     bias=True)


def load_hf_gpt2(path: Any, **overrides: Any) -> GPT:
    """A GPT with the weights of a Hugging Face GPT-2 folder.

    `overrides` may change training-only settings such as dropout. The keys may
    carry the `transformer.` prefix or not; `lm_head.weight`, being tied to
    `wte.weight`, may be absent (and must equal wte if present).
    """
    folder = Path(path)
    config = _read_config(folder)
    if overrides:
        config = GPTConfig.from_dict({**config.to_dict(), **overrides})
    weights_path = folder / "model.safetensors"
    if not weights_path.is_file():
        raise FileNotFoundError(f"{folder} has no model.safetensors (only safetensors weights are read, never pickles)")
    raw = load(weights_path)

    state: dict[str, np.ndarray] = {}
    lm_head = None
    for key, value in raw.items():
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

    model = GPT(config)
    model.load_state_dict(state)   # copies into the model's own float32 arrays
    return model


def save_hf_gpt2(model: GPT, path: Any) -> None:
    """Write `model` as a Hugging Face GPT-2 folder (the layout load_hf_gpt2 reads)."""
    cfg = model.config
    if (cfg.pos, cfg.mlp, cfg.norm, cfg.bias) != ("learned", "gelu", "layernorm", True):
        raise ValueError("only the plain GPT-2 architecture has a Hugging Face GPT-2 layout "
                         f"(this model has pos={cfg.pos}, mlp={cfg.mlp}, norm={cfg.norm}, bias={cfg.bias})")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    # save() copies to the CPU in C order, so the transposed views are written as (in, out) arrays
    tensors = {"transformer." + name: arr.T if name.endswith(CONV1D) else arr for name, arr in model.state_dict().items()}
    save(tensors, folder / "model.safetensors")
    hf_config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size, "n_ctx": cfg.block_size, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
        "n_head": cfg.n_head, "layer_norm_epsilon": cfg.norm_eps, "activation_function": "gelu_new",
    }
    write_json(folder / "config.json", hf_config)
