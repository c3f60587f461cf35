"""Load a model and its tokenizer from a folder, for sampling or as the start of a fine-tune.

    load_for_inference(folder)    any folder we or Hugging Face write: (model, tokenizer)
    load_base(folder)             the same, a language model in training mode (a fine-tune's start)
    load_finetuned(folder)        a fine-tuned model: (model, tokenizer, its config.json)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import tinytensor as tt
from bpe import Tokenizer
from gpt import GPT, GPTClassifier, GPTConfig
from gpt.lora import apply_lora
from gpt.pretrained import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, is_hf_gpt2, read_config
from tinytensor import nn
from tinytensor.serialize import verify_digests

from .checkpoint import resolve_checkpoint

HF_FILES = (CONFIG_FILE, MODEL_FILE, "vocab.json", "merges.txt")
LORA_FILE = "lora.safetensors"


def load_for_inference(folder: str | os.PathLike, device: str = "cpu",
                       say: Callable[[str], None] = print) -> tuple[nn.Module, Tokenizer]:
    """(model in eval mode, tokenizer) from one of our checkpoint folders, the output
    folder of a training run (its latest good checkpoint), a fine-tuned model
    (a GPTClassifier for a classifier), or a Hugging Face GPT-2 folder (config.json,
    model.safetensors, vocab.json, merges.txt). Checksums are verified; every
    missing file is named up front."""
    path = resolve_checkpoint(folder, say)
    raw = read_config(path)
    if raw.get("task") in ("classify", "instruct"):
        model, tok, _ = load_finetuned(path, device)
        return model, tok
    hf = is_hf_gpt2(raw)
    needed = HF_FILES if hf else (CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE)
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        kind = "a Hugging Face GPT-2 folder" if hf else "a checkpoint folder"
        raise FileNotFoundError(f"{path} looks like {kind} but lacks {', '.join(missing)} "
                                f"(it needs {', '.join(needed)})")
    model = GPT.from_pretrained(path)          # verifies the weights' checksum in our folders
    if hf:
        tok = Tokenizer.from_gpt2(path / "vocab.json", path / "merges.txt")
    else:
        verify_digests(path, {k: v for k, v in raw.get("checksums", {}).items() if k == TOKENIZER_FILE}, CONFIG_FILE)
        tok = Tokenizer.load(path / TOKENIZER_FILE)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} tokens but the model only {model.config.vocab_size}")
    return model.to(device).eval(), tok


def load_base(init_from: str | os.PathLike, device: str = "cpu") -> tuple[GPT, Tokenizer]:
    """The pretrained GPT (in training mode) and its tokenizer."""
    model, tok = load_for_inference(init_from, device=device)
    if not isinstance(model, GPT):
        raise ValueError(f"{init_from} holds a classifier; start a fine-tune from a language model")
    return model.train(), tok


def load_finetuned(folder: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, Tokenizer, dict]:
    """(model in eval mode, tokenizer, config.json) of a folder written by finetune_*:
    a GPTClassifier for task "classify", a GPT for task "instruct". Checksums are verified first."""
    folder = Path(folder)
    config = read_config(folder)
    task = config.get("task")
    if task not in ("classify", "instruct"):
        raise ValueError(f"{folder / CONFIG_FILE} is not a fine-tuned model (task {task!r}): "
                         "use a folder written by --task classify or --task instruct")
    verify_digests(folder, config.get("checksums", {}), CONFIG_FILE)
    lora = config.get("lora")
    adapters = bool(lora) and not lora["merged"]
    body = load_base(lora["base"])[0] if adapters else GPT(GPTConfig.from_dict(config["model"]))
    model: nn.Module = GPTClassifier(body, config["n_classes"]) if task == "classify" else body
    if adapters:
        apply_lora(body, lora["rank"], lora["alpha"])
        result = model.load_state_dict(tt.load(folder / LORA_FILE), strict=False)
        lost = [k for k in result.missing if "lora_" in k or k.startswith("head.")]
        if result.unexpected or lost:
            raise ValueError(f"{folder / LORA_FILE} does not fit the adapters of rank {lora['rank']}: "
                             f"unexpected {result.unexpected}, missing {lost}")
    else:
        model.load_state_dict(tt.load(folder / MODEL_FILE))
    tok = Tokenizer.load(folder / TOKENIZER_FILE)
    return model.to(device).eval(), tok, config
