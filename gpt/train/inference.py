"""Load a model and its tokenizer from a folder, for sampling or as the start of a fine-tune.

    load_for_inference(folder)    any folder we or Hugging Face write: (model, tokenizer)
    load_base(folder)             the same, a language model in training mode (a fine-tune's start)

A fine-tuned model is read by gpt.train.folders.load_finetuned, a Hugging Face export written by
gpt.train.folders.export_folder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from bpe import Tokenizer
from gpt import GPT
from gpt.files import verify_listed
from gpt.hf_llama import INDEX_FILE
from gpt.pretrained import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, hf_model_type, is_gguf, read_config
from tinytensor import nn

from .checkpoint import resolve_checkpoint
from .folders import FINETUNED_TASKS, load_finetuned

GPT2_VOCAB = ("vocab.json", "merges.txt")
HF_NAMES = {"gpt2": "GPT-2", "llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3"}


def load_for_inference(folder: str | os.PathLike, device: str = "cpu",
                       say: Callable[[str], None] = print) -> tuple[nn.Module, Tokenizer]:
    """(model in eval mode, tokenizer) from one of our checkpoint folders, the output
    folder of a training run (its latest good checkpoint), a fine-tuned model
    (a GPTClassifier for a classifier), or a Hugging Face folder: GPT-2 (config.json,
    model.safetensors, vocab.json and merges.txt, or a tokenizer.json), Llama, Qwen2
    or Qwen3 (config.json, model.safetensors or its shards, tokenizer.json).
    Checksums are verified; every missing file is named up front. A GGUF file
    (llama.cpp's format) holds both model and tokenizer."""
    path = resolve_checkpoint(folder, say)
    if is_gguf(path):
        return GPT.from_pretrained(path).to(device).eval(), Tokenizer.from_gguf(path)
    raw = read_config(path)
    if raw.get("task") in FINETUNED_TASKS:
        model, tok, _ = load_finetuned(path, device)
        return model, tok
    kind = hf_model_type(raw)
    missing = _missing_files(path, kind)
    if missing:
        what = f"a Hugging Face {HF_NAMES[kind]} folder" if kind else "a checkpoint folder"
        raise FileNotFoundError(f"{path} looks like {what} but lacks {', '.join(missing)}")
    model = GPT.from_pretrained(path)          # verifies the weights' checksum in our folders
    if kind is None:
        checksums = raw.get("checksums", {})
        verify_listed(path, {k: v for k, v in checksums.items() if k == TOKENIZER_FILE} if isinstance(checksums, dict)
                      else checksums, CONFIG_FILE)
        tok = Tokenizer.load(path / TOKENIZER_FILE)
    elif all((path / name).is_file() for name in GPT2_VOCAB):
        tok = Tokenizer.from_gpt2(*(path / name for name in GPT2_VOCAB))
    else:
        tok = Tokenizer.from_hf(path / TOKENIZER_FILE)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} tokens but the model only {model.config.vocab_size}")
    return model.to(device).eval(), tok


def _missing_files(path: Path, kind: str | None) -> list[str]:
    """The files a folder of this kind (a Hugging Face model_type, or None for ours) lacks."""
    if kind is None:
        return [name for name in (CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE) if not (path / name).is_file()]
    missing = [] if (path / MODEL_FILE).is_file() or (path / INDEX_FILE).is_file() else [MODEL_FILE]
    if (path / TOKENIZER_FILE).is_file():
        return missing
    if kind != "gpt2":
        return missing + [TOKENIZER_FILE]
    vocab = [name for name in GPT2_VOCAB if not (path / name).is_file()]
    return missing + vocab[:-1] + [f"{vocab[-1]} (or a {TOKENIZER_FILE})"] if vocab else missing


def load_base(init_from: str | os.PathLike, device: str = "cpu") -> tuple[GPT, Tokenizer]:
    """The pretrained GPT (in training mode) and its tokenizer."""
    model, tok = load_for_inference(init_from, device=device)
    if not isinstance(model, GPT):
        raise ValueError(f"{init_from} holds a classifier; start a fine-tune from a language model")
    return model.train(), tok
