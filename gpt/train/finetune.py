"""Fine-tuning: a pretrained GPT adapted to classification or to instructions, through the one training loop.

    finetune_classifier(cfg)    label<TAB>text -> a GPTClassifier
    finetune_instruct(cfg)      Alpaca JSON -> a GPT that answers

What each run writes into `cfg.out`, and gpt.train.folders.load_finetuned(folder), which
reads either back as (model, tokenizer, config), are in gpt/train/folders.py.

`cfg.init_from` is one of our checkpoint folders (or a training run's --out
folder) or a Hugging Face GPT-2 / Llama / Qwen folder.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

import tinytensor as tt
from bpe import Tokenizer
from gpt import GPT, GPTClassifier
from gpt.lora import apply_lora, count_parameters
from tinytensor import nn, optim

from . import classify, instruct
from .chat_tuning import ChatPromptTemplate, choose_template
from .checkpoint import resolve_checkpoint
from .settings import ClassifyConfig, FinetuneConfig, InstructConfig
from .data import pad_id
from .inference import load_base
from .distributed import Comm, SingleProcess
from .folders import RESPONSES_FILE, check_finetune_output, save_finetuned, write_metrics
from .loop import LoopConfig, Task, Trainer
from .metrics import MetricsLog

Say = Callable[[str], None]   # print-like: one line of text


# ---- shared pieces -----------------------------------------------------------------
def split_dataset(n: int, seed: int, fractions: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """Indices of a seeded shuffle of range(n) cut into train / val / test by `fractions`."""
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    train, val, test = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    if len(train) == 0:
        raise ValueError(f"{n} examples leave none for training: give more data")
    return {"train": train, "val": val, "test": test}


def _adapt(body: GPT, cfg: FinetuneConfig, say: Say) -> None:
    if cfg.lora_rank:
        apply_lora(body, cfg.lora_rank, cfg.lora_alpha)
        say(f"LoRA rank {cfg.lora_rank}, alpha {cfg.lora_alpha}: the base weights are frozen")


def _fit(model: nn.Module, task: Task, steps: int, cfg: FinetuneConfig, out: Path, say: Say,
         comm: Comm | None, after_eval: Callable[[dict], None] | None = None) -> tuple[dict, list[dict]]:
    """Train through the loop, then evaluate on all the data: (final metrics, evaluations along the way)."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("nothing to train: every parameter is frozen")
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, cfg.weight_decay), lr=cfg.lr)
    steps = -(-steps // cfg.grad_accum)
    loop = LoopConfig(max_steps=steps, lr=cfg.lr, min_lr=cfg.lr if cfg.min_lr is None else cfg.min_lr,
                      warmup_steps=cfg.warmup_steps, decay_steps=max(steps, cfg.warmup_steps),
                      grad_accum=cfg.grad_accum, grad_clip=cfg.grad_clip, eval_interval=cfg.eval_interval)
    trainer = Trainer(model, opt, task, loop, log=MetricsLog(out / "metrics.jsonl"), comm=comm, desc="fine-tune",
                      say=say, after_eval=after_eval)
    trainer.log.clear()
    start = time.time()
    history = trainer.run()
    if trainer.stopped_by is not None:
        # a SIGTERM's grace is seconds: save at once, without the final evaluation over all the data
        say(f"{trainer.stopped_by.name}: stopped at step {trainer.step} of {steps}: the model is saved as it is, "
            "without the final evaluation")
        return {"train_time_s": round(time.time() - start, 1), "stopped_by": trainer.stopped_by.name}, history
    final = {"train_time_s": round(time.time() - start, 1), **trainer.evaluate(final=True)}
    trainer.log.close()           # run() closed it; the final evaluation's row opened it again
    return final, history[:-1]


def _report_truncation(n_long: int, n: int, limit: int, say: Say) -> None:
    if n_long:
        say(f"warning: {n_long} of {n} examples are longer than {limit} tokens and are truncated")


# ---- classification ------------------------------------------------------------------
def finetune_classifier(cfg: ClassifyConfig, say: Say | None = None, comm: Comm | None = None) -> dict:
    """Fine-tune a classifier on cfg.data from the GPT in cfg.init_from; write it to
    cfg.out and return the final metrics (loss and accuracy on train / val / test)."""
    say = say or (comm or SingleProcess()).print
    out = check_finetune_output(cfg)
    tt.manual_seed(cfg.seed)
    examples = classify.read_labeled(cfg.data)
    labels, ids = classify.label_ids(examples, cfg.labels)
    if cfg.balance:
        examples, ids = classify.balance(examples, ids, cfg.seed)
    base = resolve_checkpoint(cfg.init_from, say)   # once: the adapters name the checkpoint that was loaded
    body, tok = load_base(base, cfg.device)
    limit = min(cfg.max_length or body.config.block_size, body.config.block_size)
    tokens = tok.encode_batch([text for _, text in examples])
    _report_truncation(sum(len(t) > limit for t in tokens), len(tokens), limit, say)
    splits = split_dataset(len(examples), cfg.seed, classify.SPLIT)
    counts = {name: np.bincount(ids[rows], minlength=len(labels)).tolist() for name, rows in splits.items()}
    say(f"{len(examples)} examples, labels {labels}; per split (train/val/test) {counts}")

    model = GPTClassifier(body, len(labels))
    if cfg.lora_rank:
        _adapt(body, cfg, say)        # the head stays trainable beside the adapters
    else:
        model.set_trainable(cfg.trainable)
    trainable, total = count_parameters(model)
    say(f"training {trainable:,} of {total:,} parameters")
    task = classify.Classification(tokens, ids, splits, pad_id(tok), limit, cfg.batch_size, cfg.epochs, cfg.seed,
                                   cfg.eval_batches)
    final, history = _fit(model, task, task.epochs.total, cfg, out, say, comm)
    if comm is None or comm.rank == 0:
        head = {f"head.{k}": v for k, v in model.head.state_dict().items()}
        save_finetuned(out, model, body, tok, {"task": "classify", "labels": labels, "n_classes": len(labels)}, cfg, head, base)
        write_metrics(out, final, history)
    return final


# ---- instruction following ------------------------------------------------------------
def finetune_instruct(cfg: InstructConfig, say: Say | None = None, comm: Comm | None = None) -> dict:
    """Instruction-tune the GPT in cfg.init_from on Alpaca-style cfg.data (85/5/10
    train/val/test, seeded); write it to cfg.out, then its greedy answers to the
    test split to out/responses.jsonl. Returns the final metrics (val loss
    before and after, train loss)."""
    say = say or (comm or SingleProcess()).print
    out = check_finetune_output(cfg)
    tt.manual_seed(cfg.seed)
    entries = instruct.read_instructions(cfg.data)
    base = resolve_checkpoint(cfg.init_from, say)   # once: the adapters name the checkpoint that was loaded
    model, tok = load_base(base, cfg.device)
    template = choose_template(cfg.prompt_template, base, tok, say)
    limit = min(cfg.max_length or model.config.block_size, model.config.block_size)
    encoded = [instruct.encode_example(tok, template, e) for e in entries]
    _report_truncation(sum(len(s) - 1 > limit for s, _ in encoded), len(encoded), limit, say)
    splits = split_dataset(len(entries), cfg.seed, instruct.SPLIT)
    if cfg.mask_prompt:
        _check_prompts_fit(encoded, splits["train"], limit, say)
    say(f"{len(entries)} examples: {len(splits['train'])} train, {len(splits['val'])} val, {len(splits['test'])} test")
    _adapt(model, cfg, say)
    trainable, total = count_parameters(model)
    say(f"training {trainable:,} of {total:,} parameters")
    task = instruct.Instructions(encoded, splits, pad_id(tok), limit, cfg.mask_prompt, cfg.batch_size, cfg.epochs,
                                 cfg.seed, cfg.eval_batches)
    val_before = task.measure(model.eval(), "val", comm or SingleProcess(), final=True)
    say(f"val loss before fine-tuning {val_before:.4f}")
    final, history = _fit(model, task, task.epochs.total, cfg, out, say, comm)
    final = {**final, "val_loss_before": val_before}
    if comm is None or comm.rank == 0:
        save_finetuned(out, model, model, tok, {"task": "instruct", "prompt_template": template.to_dict()}, cfg, {}, base)
        write_metrics(out, final, history)
        if "stopped_by" not in final:
            _write_responses(out, model, tok, template, [entries[i] for i in splits["test"][:cfg.n_responses]], cfg,
                             say)
    return final


def _check_prompts_fit(encoded: list[tuple[list[int], int]], train: np.ndarray, limit: int, say: Say) -> None:
    """With --mask-prompt only the response is learned: a prompt that fills the
    context leaves nothing to learn in its example."""
    # the first target is the token after the prompt, at input position prompt_len - 1
    no_target = [i for i, (_, prompt_len) in enumerate(encoded) if prompt_len > limit]
    if len(set(train) - set(no_target)) == 0:
        raise ValueError(f"with --mask-prompt no training example has a token to learn: every prompt is longer "
                         f"than the {limit} tokens the model sees (its block_size or --max-length). Start from "
                         "a model with a larger block_size, use a shorter --prompt-template, or drop --mask-prompt")
    if no_target:
        say(f"warning: in {len(no_target)} examples the prompt alone fills {limit} tokens, so with --mask-prompt "
            "nothing of them is learned")


def _write_responses(out: Path, model: GPT, tok: Tokenizer, template: instruct.PromptTemplate | ChatPromptTemplate,
                     entries: list[dict[str, str]], cfg: InstructConfig, say: Say) -> None:
    with open(out / RESPONSES_FILE, "w", encoding="utf-8") as f:
        for e in entries:
            answer = instruct.generate_response(model, tok, template, e["instruction"], e["input"], cfg.max_new_tokens)
            f.write(json.dumps({**e, "model_response": answer}) + "\n")
    say(f"wrote {len(entries)} test responses to {out / RESPONSES_FILE}")
