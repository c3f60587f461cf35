"""Load a model and its tokenizer from a folder, for sampling."""
from __future__ import annotations

import json
from typing import Any

from bpe import Tokenizer

from .checkpoint import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, resolve_checkpoint
from .model import GPT, GPTConfig


HF_FILES = (CONFIG_FILE, MODEL_FILE, "vocab.json", "merges.txt")
OUR_FILES = (CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE)


def load_for_inference(folder: Any, device: str = "cpu") -> tuple[GPT, Tokenizer]:
    """(model in eval mode, tokenizer) from one of our checkpoint folders
    (config.json holding a GPTConfig, model.safetensors, tokenizer.json), the
    output folder of a training run (its latest checkpoint), or a Hugging Face
    GPT-2 folder (config.json, model.safetensors, vocab.json, merges.txt).
    Every missing file is named up front."""
    from tinytensor import load

    path = resolve_checkpoint(folder)   # holds a config.json
    raw = json.loads((path / CONFIG_FILE).read_text())
    hf = "n_positions" in raw           # a Hugging Face GPT-2 folder
    needed = HF_FILES if hf else OUR_FILES
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        kind = "a Hugging Face GPT-2 folder" if hf else "a checkpoint folder"
        raise FileNotFoundError(f"{path} looks like {kind} but lacks {', '.join(missing)} "
                                f"(it needs {', '.join(needed)})")
    if hf:
        model = GPT.from_pretrained(path)
        tok = Tokenizer.from_gpt2(path / "vocab.json", path / "merges.txt")
    else:
        model = GPT(GPTConfig.from_dict(raw.get("model", raw)))
        model.load_state_dict(load(path / MODEL_FILE))
        tok = Tokenizer.load(path / TOKENIZER_FILE)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} tokens but the model only {model.config.vocab_size}")
    return model.to(device).eval(), tok
