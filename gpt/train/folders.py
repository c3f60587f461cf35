"""The folders a run writes and reads back, each kind's file names, writer and reader in one place
(training checkpoints have theirs in checkpoint.py). An output folder is checked before any work
is done: a run that cannot save must fail in its first second, not after hours of training.

    check_output_folder(path)       created if needed, proven writable
    hold_output_folder(path)        the same, then locked for one run at a time
    check_folder_kind(path, ...)    a folder holds one kind of thing (a run, a fine-tune, a model)

A fine-tuned model (finetune_classifier, finetune_instruct, finetune_dpo):

    check_finetune_output(cfg)      its --out, checked before any data or model is loaded
    save_finetuned(out, ...)        the weights (or LoRA adapters), tokenizer.json, then config.json
    write_metrics(out, ...)         metrics.json
    load_finetuned(folder)          (model, tokenizer, its config.json)

    model.safetensors   all weights (classifier names: gpt.* and head.*; instruct and dpo: a plain GPT,
                        so `python -m gpt sample` reads it too), or, with LoRA and no merge:
    lora.safetensors    the adapters (and the classifier head) only; the base weights are
                        read again from lora.base, which must still be there
    tokenizer.json
    config.json         {"task": "classify" | "instruct" | "dpo", "model": GPTConfig, "labels": [...],
                         "n_classes": K, "prompt_template": {...}, "lora": null | {"rank", "alpha",
                         "base", "merged"}, "finetune": the settings, "checksums": of the files above};
                        written last
    metrics.jsonl       one row per step and per evaluation, as pretraining writes
    metrics.json        final losses / accuracies, and the evaluations along the way
    responses.jsonl     (instruct, dpo) the model's answers to the test split

A Hugging Face folder (python -m gpt export):

    check_export_folder(out)        its --out, checked before the model is loaded
    export_folder(model, tok, out)  config.json, model.safetensors, tokenizer.json, tokenizer_config.json
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import tinytensor as tt
from bpe import Tokenizer
from gpt import GPT, GPTClassifier, GPTConfig
from gpt.chat_template import ChatSpec
from gpt.files import verify_listed
from gpt.hf_llama import INDEX_FILE
from gpt.lora import apply_lora, lora_state_dict, merge_lora
from gpt.pretrained import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, hf_family, read_config, write_json
from tinytensor import nn

from .checkpoint import digests
from .settings import FinetuneConfig

LORA_FILE = "lora.safetensors"
METRICS_FILE = "metrics.json"
RESPONSES_FILE = "responses.jsonl"
FINETUNED_TASKS = ("classify", "instruct", "dpo")     # config.json's "task" in a fine-tuned model's folder


def check_output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create `path` if needed and prove a file can be written in it; otherwise
    raise ValueError naming the flag, the folder and the reason."""
    if not str(path).strip():
        raise ValueError(f"{flag} is empty: give the folder to write to")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is an existing file, not a folder: choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path} cannot be written ({e.strerror or e}): choose a folder you can write to"
                         ) from None
    return path


LOCK_FILE = ".lock"
# what tells a folder's kind: a pretraining run, a fine-tuned model, any other model
RUN_MARKS = ("ckpt", "run.json")
MODEL_MARKS = (CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, INDEX_FILE)


@contextmanager
def hold_output_folder(path: str | os.PathLike, flag: str = "--out") -> Iterator[Path]:
    """check_output_folder, then an exclusive lock on the folder for as long as the block
    runs: a second run into the same folder is refused, naming the holder's pid. The lock
    is the OS's (flock on OUT/.lock), so it ends with the process: a crash never leaves a
    stale one. On a system without flock the folder is checked but not locked."""
    folder = check_output_folder(path, flag)
    try:
        import fcntl
    except ImportError:                   # Windows: no flock
        yield folder
        return
    with open(folder / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise ValueError(f"{flag} {folder} is in use by another run (pid {holder}): wait for it to end, or "
                             f"choose another {flag}") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield folder
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def folder_kind(path: str | os.PathLike) -> str | None:
    """What a folder holds, in words: "a pretraining run", "a fine-tuned model", "a model",
    or None (absent, empty, or holding none of these)."""
    path = Path(path)
    if not path.is_dir():
        return None
    if any((path / mark).exists() for mark in RUN_MARKS):
        return "a pretraining run"
    if not any((path / mark).exists() for mark in MODEL_MARKS):
        return None
    try:
        task = json.loads((path / CONFIG_FILE).read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        task = None
    return "a fine-tuned model" if task in FINETUNED_TASKS else "a model"


def check_folder_kind(path: str | os.PathLike, writes: str, flag: str = "--out", overwrite: bool = False,
                      replaceable: tuple[str, ...] = ()) -> None:
    """A folder holds one kind of thing. Writing `writes` (one of folder_kind's words) into
    a folder holding something else, or holding `writes` already, is a ValueError naming
    what is there, unless `overwrite` is given and that kind is in `replaceable`."""
    there = folder_kind(path)
    if there is None:
        return
    if overwrite and there in replaceable:
        return
    if there == writes == "a pretraining run":
        return                            # resuming or refusing a second run is gpt.train.pretrain's call
    fix = "pass --overwrite to replace it, or choose another " + flag if there in replaceable else \
        "choose another " + flag
    other = f", and {writes} written there would mix the two" if there != writes else ""
    raise ValueError(f"{flag} {path} already holds {there}{other}: {fix}")


# ---- a fine-tuned model ---------------------------------------------------------------
def check_finetune_output(cfg: FinetuneConfig) -> Path:
    """--out of a fine-tune, checked before any data or model is loaded."""
    out = Path(cfg.out)
    if Path(cfg.init_from).resolve() == out.resolve():
        raise ValueError(f"--out {out} is the --init-from folder: write the fine-tuned model elsewhere")
    check_folder_kind(out, "a fine-tuned model", overwrite=cfg.overwrite, replaceable=("a fine-tuned model", "a model"))
    return check_output_folder(out)


def save_finetuned(out: Path, model: nn.Module, body: GPT, tok: Tokenizer, config: dict, cfg: FinetuneConfig,
                   extra_trainable: dict[str, Any], base: Path) -> None:
    """Write the weights (full, merged, or adapters + `extra_trainable` over the checkpoint
    `base`), tokenizer.json, then config.json with the checksums of both."""
    lora = None
    weights = MODEL_FILE
    if cfg.lora_rank:
        lora = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "merged": cfg.merge_lora,
                "base": str(base.resolve())}
        if cfg.merge_lora:
            merge_lora(body)
        else:
            prefix = "gpt." if body is not model else ""
            adapters = {prefix + k: v for k, v in lora_state_dict(body).items()}
            tt.save({**adapters, **extra_trainable}, out / LORA_FILE)
            weights = LORA_FILE
    if weights == MODEL_FILE:
        tt.save(model.state_dict(), out / MODEL_FILE)
    (out / (LORA_FILE if weights == MODEL_FILE else MODEL_FILE)).unlink(missing_ok=True)   # an --overwrite's leftover
    tok.save(out / TOKENIZER_FILE)
    write_json(out / CONFIG_FILE, {**config, "model": body.config.to_dict(), "lora": lora, "finetune": cfg.to_dict(),
                                   "checksums": digests(out, (weights, TOKENIZER_FILE))})


def write_metrics(out: Path, final: dict, history: list[dict]) -> None:
    write_json(out / METRICS_FILE, {"final": final, "history": history})


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
    if task not in FINETUNED_TASKS:
        raise ValueError(f"{folder / CONFIG_FILE} is not a fine-tuned model (task {task!r}): "
                         "use a folder written by --task classify, instruct or dpo")
    verify_listed(folder, config.get("checksums", {}), CONFIG_FILE)
    _check_finetuned(config, folder / CONFIG_FILE)
    lora = config.get("lora")
    adapters = bool(lora) and not lora["merged"]
    if adapters:
        # the base is any model folder, read as inference reads it (which itself reads fine-tunes through here)
        from .inference import load_base
        body = load_base(lora["base"])[0]
    else:
        body = GPT(GPTConfig.from_dict(config["model"]))
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


# ---- a Hugging Face folder (export) ----------------------------------------------------
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
