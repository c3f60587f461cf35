"""Load a model and its tokenizer from a folder, for sampling."""
from __future__ import annotations

import json
from typing import Any

from bpe import Tokenizer

from .checkpoint import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, resolve_checkpoint
from .model import GPT, GPTConfig


def load_for_inference(folder: Any, device: str = "cpu") -> tuple[GPT, Tokenizer]:
    """(model in eval mode, tokenizer) from one of our checkpoint folders
    (config.json holding a GPTConfig, model.safetensors, tokenizer.json), the
    output folder of a training run (its latest checkpoint), or a Hugging Face
    GPT-2 folder (config.json, model.safetensors, vocab.json, merges.txt)."""
    from tinytensor import load

    path = resolve_checkpoint(folder)   # holds a config.json
    raw = json.loads((path / CONFIG_FILE).read_text())
    if "n_positions" in raw:  # a Hugging Face GPT-2 folder
        model = GPT.from_pretrained(path)
        tok = Tokenizer.from_gpt2(path / "vocab.json", path / "merges.txt")
    else:
        model = GPT(GPTConfig.from_dict(raw.get("model", raw)))
        weights = path / MODEL_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{path} has no {MODEL_FILE}")
        model.load_state_dict(load(weights))
        tok_path = path / TOKENIZER_FILE
        if not tok_path.is_file():
            raise FileNotFoundError(f"{path} has no {TOKENIZER_FILE}")
        tok = Tokenizer.load(tok_path)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} tokens but the model only {model.config.vocab_size}")
    return model.to(device).eval(), tok
