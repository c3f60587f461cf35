"""Load a model and its tokenizer from a folder, for sampling or as the start of a fine-tune.

    load_for_inference(folder)    any folder we or Hugging Face write: (model, tokenizer)
    load_base(folder)             the same, a language model in training mode (a fine-tune's start)
    load_finetuned(folder)        a fine-tuned model: (model, tokenizer, its config.json)
    export_folder(model, tok, out)  the two as a Hugging Face folder
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import tinytensor as tt
from bpe import Tokenizer
from gpt import GPT, GPTClassifier, GPTConfig
from gpt.files import verify_listed
from gpt.chat_template import ChatSpec
from gpt.lora import apply_lora
from gpt.hf_llama import INDEX_FILE
from gpt.pretrained import (CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, hf_family, hf_model_type, is_gguf, read_config,
                            write_json)
from tinytensor import nn

from .checkpoint import resolve_checkpoint
from .output import check_folder_kind, check_output_folder

GPT2_VOCAB = ("vocab.json", "merges.txt")
HF_NAMES = {"gpt2": "GPT-2", "llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3"}
LORA_FILE = "lora.safetensors"


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
    if raw.get("task") in ("classify", "instruct", "dpo"):
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


def check_export_folder(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """--out of an export, checked before the model is loaded: not a training run's folder
    (a config.json there would shadow its checkpoints), not a model unless `overwrite`."""
    check_folder_kind(out, "a model", overwrite=overwrite, replaceable=("a model", "a fine-tuned model"))
    return check_output_folder(out)


def export_folder(model: GPT, tok: Tokenizer, out: str | os.PathLike, chat: ChatSpec | None = None,
                  overwrite: bool = False) -> str:
    """Write model and tokenizer as a Hugging Face folder; returns its model_type. The tokenizer
    goes to tokenizer.json (bpe's Tokenizer.save_hf), which `tokenizers` reads, with a
    tokenizer_config.json that makes transformers take it as it is; a chat template, if
    given, goes there too, and the ids that end a reply into config.json's eos_token_id.
    A folder holding a model already is replaced only with `overwrite`; a training run's folder never."""
    out = Path(out)
    kind = hf_family(model.config)             # before anything is written: a ValueError naming the options
    check_export_folder(out, overwrite)
    model.save_pretrained(out)
    tok.save_hf(out / TOKENIZER_FILE)
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast"}
    if chat is not None:
        tokenizer_config |= {"chat_template": chat.template, "bos_token": chat.bos_token, "eos_token": chat.eos_token}
        write_json(out / CONFIG_FILE, {**read_config(out), "eos_token_id": list(chat.stop_ids)})
    write_json(out / "tokenizer_config.json", tokenizer_config)
    return kind


def load_base(init_from: str | os.PathLike, device: str = "cpu") -> tuple[GPT, Tokenizer]:
    """The pretrained GPT (in training mode) and its tokenizer."""
    model, tok = load_for_inference(init_from, device=device)
    if not isinstance(model, GPT):
        raise ValueError(f"{init_from} holds a classifier; start a fine-tune from a language model")
    return model.train(), tok


def _check_finetuned(config: dict, where: Path) -> None:
    """The fields load_finetuned reads, each of its type; ValueError names the first that is not."""
    def need(ok: bool, field: str, expected: str) -> None:
        if not ok:
            raise ValueError(f"{where}: {field} must be {expected}: the file is corrupt")

    need(isinstance(config.get("model"), dict), "'model'", "an object of GPTConfig fields")
    if config["task"] == "classify":
        labels = config.get("labels")
        need(isinstance(labels, list) and all(isinstance(x, str) for x in labels), "'labels'", "a list of names")
        need(config.get("n_classes") == len(labels), "'n_classes'", "the number of labels")
    lora = config.get("lora")
    if lora:
        need(isinstance(lora, dict) and isinstance(lora.get("merged"), bool) and isinstance(lora.get("base"), str)
             and isinstance(lora.get("rank"), int) and isinstance(lora.get("alpha"), (int, float)),
             "'lora'", "null or {rank: integer, alpha: number, base: folder, merged: true or false}")


def load_finetuned(folder: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, Tokenizer, dict]:
    """(model in eval mode, tokenizer, config.json) of a folder written by finetune_*:
    a GPTClassifier for task "classify", a GPT for task "instruct" or "dpo". Checksums are verified first."""
    folder = Path(folder)
    config = read_config(folder)
    task = config.get("task")
    if task not in ("classify", "instruct", "dpo"):
        raise ValueError(f"{folder / CONFIG_FILE} is not a fine-tuned model (task {task!r}): "
                         "use a folder written by --task classify, instruct or dpo")
    verify_listed(folder, config.get("checksums", {}), CONFIG_FILE)
    _check_finetuned(config, folder / CONFIG_FILE)
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
