"""Fine-tuning loops: a pretrained GPT adapted to classification or to instructions.

    finetune_classifier(init_from, data, out, cfg)   label<TAB>text -> a GPTClassifier
    finetune_instruct(init_from, data, out, cfg)     Alpaca JSON -> a GPT that answers
    load_finetuned(folder)                           (model, tokenizer, config) of either

`init_from` is one of our checkpoint folders (or a training run's --out folder)
or a Hugging Face GPT-2 folder. Each run writes into `out`:

    config.json         {"task": "classify" | "instruct", "model": GPTConfig, "labels": [...],
                         "n_classes": K, "prompt_template": {...}, "lora": null | {"rank", "alpha",
                         "base", "merged"}, "finetune": the FinetuneConfig}
    model.safetensors   all weights (classifier names: gpt.* and head.*; instruct: a plain GPT,
                        so `python -m gpt sample` reads it too), or, with LoRA and no merge:
    lora.safetensors    the adapters (and the classifier head) only; the base weights are
                        read again from lora.base, which must still be there
    tokenizer.json
    metrics.json        final losses / accuracies, and the evaluations along the way
    responses.jsonl     (instruct) the model's answers to the test split
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

import tinytensor as tt
import tinytensor.functional as F
from bpe import Tokenizer
from tinytensor import nn, optim
from tinytensor.backend import to_device

from .checkpoint import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, resolve_checkpoint, write_json
from .classify import GPTClassifier, balance, classification_loss, label_ids, pad_batch, predict_proba, read_labeled
from .data import EOT
from .inference import load_for_inference
from .instruct import ALPACA, IGNORE_INDEX, PromptTemplate, collate, encode_example, generate_response, read_instructions
from .lora import apply_lora, count_parameters, lora_state_dict, merge_lora
from .model import GPT, GPTConfig

LORA_FILE = "lora.safetensors"
METRICS_FILE = "metrics.json"
RESPONSES_FILE = "responses.jsonl"

Log = Callable[[str], None]


@dataclass
class FinetuneConfig:
    """Settings shared by both tasks. The defaults are the book's (chapters 6-7)
    for a pretrained GPT-2; a small model trained here wants a larger lr."""
    epochs: int = 3
    batch_size: int = 8
    lr: float = 5e-5
    min_lr: float | None = None          # cosine decay to this over the run; None: constant lr after warmup
    warmup_steps: int = 0
    weight_decay: float = 0.1
    grad_clip: float | None = 1.0
    max_length: int | None = None        # None: the model's block_size
    eval_interval: int = 50              # steps between evaluations (0: only at the end)
    eval_batches: int | None = 5         # batches per split at those evaluations (None: all)
    seed: int = 123
    device: str = "cpu"
    # classification
    trainable: str = "last-block"        # all | last-block | head
    balance: bool = False
    labels: list[str] | None = None      # fixes the label set and order; None: sorted labels of the data
    # instruction following
    mask_prompt: bool = False
    max_new_tokens: int = 256            # per test response
    n_responses: int | None = None       # how many test responses to write (None: all)
    # LoRA (rank 0: off)
    lora_rank: int = 0
    lora_alpha: float = 16.0
    merge_lora: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens, got {self.max_length}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be 0 (off) or positive, got {self.lora_rank}")
        if self.merge_lora and not self.lora_rank:
            raise ValueError("merge_lora needs adapters to merge: give a lora_rank too")
        if self.trainable not in ("all", "last-block", "head"):
            raise ValueError(f"trainable must be all, last-block or head, got {self.trainable!r}")


# ---- shared pieces -----------------------------------------------------------------
def load_base(init_from: str | os.PathLike, device: str = "cpu") -> tuple[GPT, Tokenizer]:
    """The pretrained GPT (in training mode) and its tokenizer."""
    model, tok = load_for_inference(init_from, device=device)
    return model.train(), tok


def split_dataset(n: int, seed: int, fractions: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a seeded shuffle of range(n) cut into train / val / test by `fractions`."""
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    train, val, test = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    if len(train) == 0:
        raise ValueError(f"{n} examples leave none for training: give more data")
    return train, val, test


def _optimizer(model: nn.Module, cfg: FinetuneConfig) -> optim.AdamW:
    """AdamW over the trainable parameters only; matrices decay, vectors (biases, norms) do not."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("nothing to train: every parameter is frozen")
    return optim.AdamW(optim.param_groups_for_weight_decay(model, cfg.weight_decay), lr=cfg.lr)


def _train(model: nn.Module, n_train: int, step_loss: Callable[[np.ndarray], tt.Tensor], evaluate: Callable[[], dict],
           cfg: FinetuneConfig, log: Log) -> list[dict]:
    """The loop both tasks share: shuffled mini-batches for cfg.epochs epochs, AdamW
    with optional warmup + cosine decay and gradient clipping, an evaluation every
    cfg.eval_interval steps. `step_loss(rows)` is the loss of the batch of those
    training rows. Returns the evaluations."""
    opt = _optimizer(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = -(-n_train // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    rng = np.random.default_rng(cfg.seed)
    history, step, start = [], 0, time.time()
    say = tqdm.write if log is print else log      # print between the progress bar's redraws
    bar = tqdm(total=total, desc="fine-tune", unit="step", dynamic_ncols=True, leave=False)
    model.train()
    for epoch in range(cfg.epochs):
        order = rng.permutation(n_train)
        for first in range(0, n_train, cfg.batch_size):
            lr = optim.cosine_schedule(step, cfg.lr, cfg.lr if cfg.min_lr is None else cfg.min_lr,
                                       cfg.warmup_steps, max(total, cfg.warmup_steps))
            for group in opt.param_groups:
                group["lr"] = lr
            loss = step_loss(order[first:first + cfg.batch_size])
            opt.zero_grad()
            loss.backward()
            if cfg.grad_clip:
                optim.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
            if cfg.eval_interval and (step % cfg.eval_interval == 0) and step < total:
                row = {"step": step, "epoch": epoch + 1, "elapsed_s": round(time.time() - start, 1), **evaluate()}
                history.append(row)
                say(_format_row(row))
                model.train()
    bar.close()
    return history


def _format_row(row: dict) -> str:
    return " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def _save(out: Path, model: nn.Module, body: GPT, tok: Tokenizer, config: dict, cfg: FinetuneConfig,
          init_from: str | os.PathLike, extra_trainable: dict[str, Any]) -> None:
    """Write config.json, the weights (full, merged, or adapters + `extra_trainable`) and tokenizer.json."""
    out.mkdir(parents=True, exist_ok=True)
    lora = None
    if cfg.lora_rank:
        lora = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "merged": cfg.merge_lora,
                "base": str(resolve_checkpoint(init_from).resolve())}
        if cfg.merge_lora:
            merge_lora(body)
        else:
            prefix = "gpt." if body is not model else ""
            adapters = {prefix + k: v for k, v in lora_state_dict(body).items()}
            tt.save({**adapters, **extra_trainable}, out / LORA_FILE)
    if not cfg.lora_rank or cfg.merge_lora:
        tt.save(model.state_dict(), out / MODEL_FILE)
    tok.save(out / TOKENIZER_FILE)
    write_json(out / CONFIG_FILE, {**config, "model": body.config.to_dict(), "lora": lora,
                                    "finetune": asdict(cfg)})


def load_finetuned(folder: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, Tokenizer, dict]:
    """(model in eval mode, tokenizer, config.json) of a folder written by finetune_*:
    a GPTClassifier for task "classify", a GPT for task "instruct"."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE}: give the output folder of a fine-tuning run")
    config = json.loads((folder / CONFIG_FILE).read_text())
    task = config.get("task")
    if task not in ("classify", "instruct"):
        raise ValueError(f"{folder / CONFIG_FILE} is not a fine-tuned model (task {task!r}): "
                         "use a folder written by --task classify or --task instruct")
    lora = config.get("lora")
    adapters = bool(lora) and not lora["merged"]
    body = load_base(lora["base"])[0] if adapters else GPT(GPTConfig.from_dict(config["model"]))
    model: nn.Module = GPTClassifier(body, config["n_classes"]) if task == "classify" else body
    if adapters:
        apply_lora(body, lora["rank"], lora["alpha"])
        saved = tt.load(folder / LORA_FILE)
        result = model.load_state_dict(saved, strict=False)
        lost = [k for k in result.missing if "lora_" in k or k.startswith("head.")]
        if result.unexpected or lost:
            raise ValueError(f"{folder / LORA_FILE} does not fit the adapters of rank {lora['rank']}: "
                             f"unexpected {result.unexpected}, missing {lost}")
    else:
        model.load_state_dict(tt.load(folder / MODEL_FILE))
    tok = Tokenizer.load(folder / TOKENIZER_FILE)
    return model.to(device).eval(), tok, config


def _pad_id(tok: Tokenizer) -> int:
    # any id works for padding (targets there are ignored, and attention is causal); end-of-text is GPT-2's choice
    return tok.special_tokens.get(EOT, 0)


def _with_lora(body: GPT, cfg: FinetuneConfig, log: Log) -> None:
    if cfg.lora_rank:
        apply_lora(body, cfg.lora_rank, cfg.lora_alpha)
        log(f"LoRA rank {cfg.lora_rank}, alpha {cfg.lora_alpha}: the base weights are frozen")


# ---- classification ------------------------------------------------------------------
def finetune_classifier(init_from: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
                        cfg: FinetuneConfig | None = None, log: Log = print) -> dict:
    """Fine-tune a classifier on `data` (label<TAB>text, CSV or JSONL) from the GPT in
    `init_from`; write it to `out` and return the final metrics (loss and accuracy
    on train / val / test)."""
    cfg = cfg or FinetuneConfig()
    tt.manual_seed(cfg.seed)
    examples = read_labeled(data)
    labels, ids = label_ids(examples, cfg.labels)
    if cfg.balance:
        examples, ids = balance(examples, ids, cfg.seed)
    body, tok = load_base(init_from, cfg.device)
    limit = min(cfg.max_length or body.config.block_size, body.config.block_size)
    tokens = tok.encode_batch([text for _, text in examples])
    too_long = sum(len(t) > limit for t in tokens)
    if too_long:
        log(f"warning: {too_long} of {len(tokens)} texts are longer than {limit} tokens and are truncated")
    splits = dict(zip(("train", "val", "test"), split_dataset(len(examples), cfg.seed, (0.7, 0.1, 0.2))))
    counts = {name: np.bincount(ids[rows], minlength=len(labels)).tolist() for name, rows in splits.items()}
    log(f"{len(examples)} examples, labels {labels}; per split (train/val/test) {counts}")

    model = GPTClassifier(body, len(labels))
    if cfg.lora_rank:
        _with_lora(body, cfg, log)        # the head stays trainable beside the adapters
    else:
        model.set_trainable(cfg.trainable)
    trainable, total = count_parameters(model)
    log(f"training {trainable:,} of {total:,} parameters")
    pad = _pad_id(tok)

    def batch(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx, lengths, _ = pad_batch([tokens[i] for i in rows], pad, limit)
        return idx, lengths, ids[rows]

    def measure(rows: np.ndarray, max_batches: int | None) -> tuple[float, float]:
        """(mean loss, accuracy) over the rows, in batches of similar length (less padding)."""
        rows = rows[np.argsort([len(tokens[i]) for i in rows], kind="stable")]
        chunks = [rows[i:i + cfg.batch_size * 4] for i in range(0, len(rows), cfg.batch_size * 4)]
        if max_batches is not None and len(chunks) > max_batches:
            picks = np.random.default_rng(cfg.seed).choice(len(chunks), max_batches, replace=False)
            chunks = [chunks[i] for i in picks]
        loss_sum, correct, n = 0.0, 0, 0
        model.eval()
        with tt.no_grad():
            for chunk in chunks:
                loss, right = classification_loss(model, *batch(chunk))
                loss_sum += loss.item() * len(chunk)
                correct += right
                n += len(chunk)
        return (loss_sum / n, correct / n) if n else (float("nan"), float("nan"))

    def evaluate(max_batches: int | None = cfg.eval_batches) -> dict:
        row = {}
        for name, rows in splits.items():
            row[f"{name}_loss"], row[f"{name}_acc"] = measure(rows, max_batches)
        return row

    start = time.time()
    history = _train(model, len(splits["train"]),
                     lambda rows: classification_loss(model, *batch(splits["train"][rows]))[0], evaluate, cfg, log)
    final = {"train_time_s": round(time.time() - start, 1), **evaluate(None)}
    log("final | " + _format_row(final))
    out = Path(out)
    head = {f"head.{k}": v for k, v in model.head.state_dict().items()}
    _save(out, model, body, tok, {"task": "classify", "labels": labels, "n_classes": len(labels)}, cfg, init_from, head)
    write_json(out / METRICS_FILE, {"final": final, "history": history})
    return final


def classify_texts(model: GPTClassifier, tok: Tokenizer, labels: Sequence[str], texts: Sequence[str],
                   max_length: int | None = None) -> list[tuple[str, float]]:
    """(label, probability) of the likeliest class for each text."""
    probs = predict_proba(model, tok.encode_batch(list(texts)), _pad_id(tok), max_length)
    return [(labels[int(p.argmax())], float(p.max())) for p in probs]


# ---- instruction following ------------------------------------------------------------
def finetune_instruct(init_from: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
                      cfg: FinetuneConfig | None = None, template: PromptTemplate = ALPACA,
                      log: Log = print) -> dict:
    """Instruction-tune the GPT in `init_from` on Alpaca-style `data` (85/5/10
    train/val/test, seeded); write it to `out`, then its greedy answers to the
    test split to out/responses.jsonl. Returns the final metrics (val loss
    before and after, train loss)."""
    cfg = cfg or FinetuneConfig()
    tt.manual_seed(cfg.seed)
    entries = read_instructions(data)
    model, tok = load_base(init_from, cfg.device)
    limit = min(cfg.max_length or model.config.block_size, model.config.block_size)
    encoded = [encode_example(tok, template, e) for e in entries]
    too_long = sum(len(s) - 1 > limit for s, _ in encoded)
    if too_long:
        log(f"warning: {too_long} of {len(encoded)} examples are longer than {limit} tokens and are truncated")
    train, val, test = split_dataset(len(entries), cfg.seed, (0.85, 0.05, 0.10))
    if cfg.mask_prompt:
        # the first target is the token after the prompt, at input position prompt_len - 1
        no_target = [i for i, (_, prompt_len) in enumerate(encoded) if prompt_len > limit]
        if len(set(train) - set(no_target)) == 0:
            raise ValueError(f"with --mask-prompt no training example has a token to learn: every prompt is longer "
                             f"than the {limit} tokens the model sees (its block_size or --max-length). Start from "
                             "a model with a larger block_size, use a shorter --prompt-template, or drop --mask-prompt")
        if no_target:
            log(f"warning: in {len(no_target)} examples the prompt alone fills {limit} tokens, so with --mask-prompt "
                "nothing of them is learned")
    log(f"{len(entries)} examples: {len(train)} train, {len(val)} val, {len(test)} test")
    _with_lora(model, cfg, log)
    trainable, total = count_parameters(model)
    log(f"training {trainable:,} of {total:,} parameters")
    pad = _pad_id(tok)

    def batch(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs, targets, _ = collate([encoded[i] for i in rows], pad, cfg.mask_prompt, limit)
        return inputs, targets

    def step_loss(rows: np.ndarray) -> tt.Tensor:
        return model(*batch(train[rows]))[1]

    def measure(rows: np.ndarray, max_batches: int | None) -> float:
        """Mean loss per target token (not per batch) over the rows."""
        chunks = [rows[i:i + cfg.batch_size] for i in range(0, len(rows), cfg.batch_size)][:max_batches]
        total_loss, n_tokens = 0.0, 0
        model.eval()
        with tt.no_grad():
            for chunk in chunks:
                inputs, targets = batch(chunk)
                logits = model(inputs)                                   # (B, T, V)
                flat = to_device(targets.reshape(-1), logits.device)     # (B*T,)
                total_loss += F.cross_entropy(logits.reshape(flat.shape[0], -1), flat, reduction="sum").item()
                n_tokens += int((targets != IGNORE_INDEX).sum())
        return total_loss / n_tokens if n_tokens else float("nan")

    def evaluate(max_batches: int | None = cfg.eval_batches) -> dict:
        return {"train_loss": measure(train, max_batches), "val_loss": measure(val, max_batches)}

    val_before = measure(val, None) if len(val) else float("nan")
    log(f"val loss before fine-tuning {val_before:.4f}")
    start = time.time()
    history = _train(model, len(train), step_loss, evaluate, cfg, log)
    final = {"train_time_s": round(time.time() - start, 1), "val_loss_before": val_before, **evaluate(None)}
    log("final | " + _format_row(final))
    out = Path(out)
    _save(out, model, model, tok, {"task": "instruct", "prompt_template": template.to_dict()}, cfg, init_from, {})
    write_json(out / METRICS_FILE, {"final": final, "history": history})

    rows = test[:cfg.n_responses] if cfg.n_responses is not None else test
    with open(out / RESPONSES_FILE, "w", encoding="utf-8") as f:
        for i in rows:
            e = entries[i]
            answer = generate_response(model, tok, template, e["instruction"], e["input"], cfg.max_new_tokens)
            f.write(json.dumps({**e, "model_response": answer}) + "\n")
    log(f"wrote {len(rows)} test responses to {out / RESPONSES_FILE}")
    return final
