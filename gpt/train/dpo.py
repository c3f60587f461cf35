"""Preference tuning: Direct Preference Optimization (Rafailov et al. 2023) through the one training loop.

    read_preferences(path)              [{"instruction", "input", "chosen", "rejected"}] from JSON or JSONL
    encode_pair(tok, template, entry)   (chosen ids, rejected ids, prompt length): prompt | response | <|endoftext|>
    collate_pairs(pairs, pad_id)        inputs and targets (B, 2, T), chosen and rejected padded together
    response_log_probs(model, ...)      (B, 2) the summed log-probability of each response's tokens
    Reference                           the frozen starting model: the adapters switched off, or a frozen copy
    Preferences(...)                    the task: shuffled epochs, the DPO loss, rewards per split
    finetune_dpo(cfg)                   an instruction-tuned GPT + preference pairs -> the tuned GPT in cfg.out

For a pair (prompt x, chosen y_c, rejected y_r), with log pi(y | x) the summed
log-probability of the response's tokens (and its <|endoftext|>) given the prompt:

    Delta = (log pi(y_c | x) - log pi_ref(y_c | x)) - (log pi(y_r | x) - log pi_ref(y_r | x))
    loss  = -log sigmoid(beta Delta)                        (F.dpo_loss; docs/dpo.md derives its backward)

pi is the policy (the model being tuned), pi_ref the model it started from,
frozen. beta (log pi - log pi_ref) is a response's implicit reward; an
evaluation reports the loss, how often the chosen response's reward beats the
rejected one's (reward accuracy), the mean margin between them, and both
rewards. At step 0 the policy is the reference: every reward is 0, the loss log 2.

The rows of a batch are pairs: inputs[b, 0] is pair b's chosen sequence,
inputs[b, 1] its rejected one, both padded to the batch's longest of the 2B,
so one forward of (2B, T) scores both and a data-parallel split keeps pairs whole.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import tinytensor as tt
import tinytensor.functional as F
from bpe import Tokenizer
from gpt import GPT
from gpt.lora import adapters_off, count_parameters
from tinytensor import Tensor, nn
from tinytensor.backend import to_device

from . import instruct
from .checkpoint import resolve_checkpoint
from .settings import DPOConfig
from .data import pad_id, read_text
from .distributed import Comm, SingleProcess
from .epochs import EpochBatches, EpochTask
from .finetune import Say, _adapt, _fit, _report_truncation, split_dataset
from .folders import RESPONSES_FILE, check_finetune_output, save_finetuned, write_metrics
from .inference import load_base
from .loop import Batch, summed
from .metrics import MetricsLog, draw_losses, plot_available, save_figure, step_figure

PLOT_FILE = "dpo.png"
RESPONSES = ("chosen", "rejected")
# the numbers an evaluation adds up per pair, in this order (see _pair_sums)
SUMS = ("loss", "reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward")

Pair = tuple[list[int], list[int], int]      # chosen ids, rejected ids, prompt length


# ---- data --------------------------------------------------------------------------------
def read_preferences(path: str | Path) -> list[dict[str, str]]:
    """Entries with "instruction", "input" ("" when absent), "chosen" and "rejected",
    from a JSON list or a JSONL file. Raises ValueError naming the entry and the field
    on a malformed one (a missing or empty response), or on an empty set."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no preference data at {path}")
    text = read_text(path, hint=None)
    if path.suffix == ".jsonl":
        rows = [instruct._parse_json(line, path, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        rows = instruct._parse_json(text, path, 0)
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of {{instruction, input, chosen, rejected}} objects")
    entries = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: entry {n} is not a JSON object with 'instruction', 'chosen' and 'rejected'")
        for key in ("instruction",) + RESPONSES:
            if not isinstance(row.get(key), str):
                raise ValueError(f"{path}: entry {n} needs a string field {key!r} (the fields are 'instruction', "
                                 "'input' (optional), 'chosen' and 'rejected')")
        for key in RESPONSES:
            if not row[key].strip():
                raise ValueError(f"{path}: entry {n}: the {key!r} response is empty; every pair needs two responses "
                                 "to compare: fill it in or drop the entry")
        entries.append({"instruction": row["instruction"], "input": str(row.get("input") or ""),
                        "chosen": row["chosen"], "rejected": row["rejected"]})
    if not entries:
        raise ValueError(f"{path} holds no preference pairs")
    return entries


def encode_pair(tok: Tokenizer, template: instruct.PromptTemplate, entry: dict[str, str]) -> Pair:
    """The chosen and the rejected sequence, each prompt + response + <|endoftext|>
    (as instruction tuning encodes them), and the prompt's length, which both share."""
    chosen, prompt_len = instruct.encode_example(tok, template, {**entry, "output": entry["chosen"]})
    rejected, _ = instruct.encode_example(tok, template, {**entry, "output": entry["rejected"]})
    return chosen, rejected, prompt_len


def collate_pairs(pairs: Sequence[Pair], pad: int, max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-token targets (B, 2, T), [:, 0] the chosen sequences and [:, 1]
    the rejected ones, all 2B padded to one length T. Only the response tokens and
    their <|endoftext|> are targets; the prompt and the padding get IGNORE_INDEX
    (instruct.collate with mask_prompt). `max_length` caps T."""
    flat = [(seq, prompt_len) for chosen, rejected, prompt_len in pairs for seq in (chosen, rejected)]
    inputs, targets, _ = instruct.collate(flat, pad, mask_prompt=True, max_length=max_length)
    return inputs.reshape(len(pairs), 2, -1), targets.reshape(len(pairs), 2, -1)


# ---- log-probabilities -------------------------------------------------------------------
def response_log_probs(model: nn.Module, inputs: np.ndarray, targets: np.ndarray) -> Tensor:
    """(B, 2): sum over t of log p(targets[b, i, t] | inputs[b, i, :t+1]) on the targets
    that are not ignored (the response tokens). One forward of the 2B sequences; the
    per-token log-probability is minus cross_entropy's (docs/softmax.md), so its
    backward is cross_entropy's with each row's upstream gradient."""
    b, _, t = inputs.shape
    logits = model(inputs.reshape(2 * b, t))                                   # (2B, T, V)
    token_log_probs = -F.cross_entropy(logits, targets.reshape(2 * b, t), reduction="none")  # (2B, T), 0 if ignored
    return token_log_probs.sum(axis=-1).reshape(b, 2)                          # (B, 2)


class Reference:
    """log pi_ref of the response tokens, the frozen starting model's, never with a gradient.
    `frozen` None: the policy carries LoRA adapters, and the reference is the policy with
    them switched off (gpt.lora.adapters_off), so no second copy of the weights is held.
    Otherwise `frozen` is that copy (full fine-tuning changes every weight)."""

    def __init__(self, policy: nn.Module, frozen: GPT | None):
        self.policy, self.frozen = policy, frozen

    def __call__(self, inputs: np.ndarray, targets: np.ndarray) -> Any:
        """(B, 2) array of the reference's summed log-probabilities."""
        with tt.no_grad():
            if self.frozen is not None:
                return response_log_probs(self.frozen, inputs, targets).data
            with self.policy.evaluating(), adapters_off(self.policy):
                return response_log_probs(self.policy, inputs, targets).data


def frozen_copy(folder: Path, device: str) -> GPT:
    """The model in `folder` again, every parameter frozen, in eval mode."""
    model, _ = load_base(folder, device)
    for p in model.parameters():
        p.requires_grad = False
    return model.eval()


# ---- the task ----------------------------------------------------------------------------
class Preferences(EpochTask):
    """DPO: shuffled mini-batches of the train split's pairs for the configured epochs;
    the loss is F.dpo_loss summed over the pairs (the loop divides by their number);
    evaluation reports loss and rewards per split. The reference log-probabilities come
    from `reference` per batch, or from a table made once by cache_reference()."""

    def __init__(self, pairs: list[Pair], splits: dict[str, np.ndarray], pad: int, limit: int,
                 reference: Reference | None, beta: float, batch_size: int, epochs: int, seed: int,
                 eval_batches: int | None):
        self.pairs, self.splits, self.pad, self.limit = pairs, splits, pad, limit
        self.reference, self.beta = reference, beta
        self.batch_size, self.eval_batches = batch_size, eval_batches
        self.cached: np.ndarray | None = None       # (n_pairs, 2) once cache_reference() ran
        self.epochs = EpochBatches(len(splits["train"]), batch_size, epochs, seed)

    def batch(self, rows: np.ndarray) -> Batch:
        inputs, targets = collate_pairs([self.pairs[i] for i in rows], self.pad, self.limit)
        return Batch((inputs, targets, np.asarray(rows)), n_targets=len(rows), n_tokens=inputs.size)

    def reference_log_probs(self, inputs: np.ndarray, targets: np.ndarray, rows: np.ndarray) -> Any:
        return self.cached[rows] if self.cached is not None else self.reference(inputs, targets)

    def loss(self, model: nn.Module, rows: tuple[Any, ...]) -> Tensor:
        inputs, targets, index = rows
        policy = response_log_probs(model, inputs, targets)                    # (b, 2), with a graph
        ref = self.reference_log_probs(inputs, targets, index)                 # (b, 2), constants
        return F.dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], self.beta, reduction="sum")

    def cache_reference(self, comm: Comm) -> None:
        """The reference's log-probabilities of every pair in the splits, once (each process
        scoring its share of each batch); afterwards no reference forward runs. The batches
        are an evaluation's, so an evaluation at step 0 compares the policy with the very
        numbers it computes (another padding length could round the last bit differently)."""
        table = np.zeros((len(self.pairs), 2))
        for split in self.splits:
            for chunk in self._chunks(split):
                inputs, targets, index = self.batch(chunk).rows(comm.rank, comm.size)
                if len(index):
                    table[index] = to_device(self.reference(inputs, targets), "cpu")
        self.cached = comm.sum(table.reshape(-1)).reshape(table.shape)
        self.reference = None

    def _chunks(self, split: str) -> list[np.ndarray]:
        """The split's rows in batches, in order: how an evaluation walks it."""
        rows = self.splits[split]
        return [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]

    def _pair_sums(self, model: nn.Module, rows: tuple[Any, ...]) -> list[float]:
        """Sums over these pairs of SUMS, and their count."""
        inputs, targets, index = rows
        if not len(index):
            return [0.0] * (len(SUMS) + 1)
        policy = response_log_probs(model, inputs, targets).numpy()
        ref = to_device(self.reference_log_probs(inputs, targets, index), "cpu")
        rewards = self.beta * (policy - ref)                                   # (b, 2) implicit rewards
        margins = rewards[:, 0] - rewards[:, 1]
        loss = F.dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], self.beta, reduction="sum").item()
        return [loss, float((margins > 0).sum()), float(margins.sum()), float(rewards[:, 0].sum()),
                float(rewards[:, 1].sum()), float(len(index))]

    def measure(self, model: nn.Module, split: str, comm: Comm, final: bool) -> dict[str, float]:
        """The mean of each of SUMS over the split's pairs (its first eval_batches batches unless final)."""
        chunks = self._chunks(split)
        if not final:
            chunks = chunks[:self.eval_batches]
        if not chunks:
            return {name: float("nan") for name in SUMS}
        *sums, n = summed(model, [self.batch(c) for c in chunks], self._pair_sums, comm)
        return {name: s / n for name, s in zip(SUMS, sums)}

    def evaluate(self, model: nn.Module, comm: Comm, final: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"epoch": self.epochs.epoch}
        for split in ("train", "val"):
            row.update({f"{split}_{name}": value for name, value in self.measure(model, split, comm, final).items()})
        return row

    def describe(self, row: dict[str, Any]) -> str:
        return (f"step {row['step']} | loss train {row['train_loss']:.4f} val {row['val_loss']:.4f} | "
                f"val reward accuracy {row['val_reward_accuracy']:.3f}, margin {row['val_reward_margin']:.4f} "
                f"(chosen {row['val_chosen_reward']:.4f}, rejected {row['val_rejected_reward']:.4f})")


def describe_split(metrics: dict[str, float]) -> str:
    return (f"loss {metrics['loss']:.4f}, reward accuracy {metrics['reward_accuracy']:.3f}, "
            f"margin {metrics['reward_margin']:.4f}")


# ---- the run -----------------------------------------------------------------------------
def finetune_dpo(cfg: DPOConfig, say: Say | None = None, comm: Comm | None = None) -> dict:
    """Tune the GPT in cfg.init_from on the preference pairs in cfg.data (the 85/5/10
    split of instruction tuning, seeded, so the same data and seed give its very
    splits); write it to cfg.out, with the greedy answers to the first test prompts
    before and after in out/responses.jsonl. Returns the final metrics, with the
    val split's before tuning."""
    comm = comm or SingleProcess()
    say = say or comm.print
    out = check_finetune_output(cfg)
    template = instruct.PromptTemplate.from_file(cfg.prompt_template) if cfg.prompt_template else instruct.ALPACA
    plotting = plot_available(cfg.plot, PLOT_FILE, say)
    tt.manual_seed(cfg.seed)
    entries = read_preferences(cfg.data)
    base = resolve_checkpoint(cfg.init_from, say)   # once: the adapters name the checkpoint that was loaded
    model, tok = load_base(base, cfg.device)
    limit = min(cfg.max_length or model.config.block_size, model.config.block_size)
    pairs = [encode_pair(tok, template, e) for e in entries]
    _report_truncation(sum(max(len(c), len(r)) - 1 > limit for c, r, _ in pairs), len(pairs), limit, say)
    splits = _without_unfit(pairs, split_dataset(len(entries), cfg.seed, instruct.SPLIT), limit, say)
    say(f"{len(entries)} pairs: {len(splits['train'])} train, {len(splits['val'])} val, {len(splits['test'])} test")
    _adapt(model, cfg, say)
    say("reference: " + ("the same weights with the adapters switched off (no second copy)" if cfg.lora_rank
                         else "a frozen copy of the starting model"))
    trainable, total = count_parameters(model)
    say(f"training {trainable:,} of {total:,} parameters; beta {cfg.beta}")
    # with LoRA the reference is the policy with its adapters off; else a frozen copy of the start,
    # held by the task alone, so that caching the reference frees it
    task = Preferences(pairs, splits, pad_id(tok), limit,
                       Reference(model, None if cfg.lora_rank else frozen_copy(base, cfg.device)), cfg.beta,
                       cfg.batch_size, cfg.epochs, cfg.seed, cfg.eval_batches)
    if cfg.cache_reference:
        task.cache_reference(comm)
        say(f"cached the reference's log-probabilities of {sum(map(len, splits.values()))} pairs")
    with model.evaluating():
        before = task.measure(model, "val", comm, final=True)
    say(f"val before tuning: {describe_split(before)}")
    main = comm.rank == 0
    tests = [entries[i] for i in splits["test"][:cfg.n_responses]]
    answers_before = _answers(model, tok, template, tests, cfg.max_new_tokens) if main else []
    after_eval = (lambda row: plot_dpo(MetricsLog(out / "metrics.jsonl").read(), out / PLOT_FILE)) if plotting else None
    final, history = _fit(model, task, task.epochs.total, cfg, out, say, comm, after_eval=after_eval)
    final = {**final, **{f"val_{name}_before": value for name, value in before.items()}}
    if main:
        save_finetuned(out, model, model, tok, {"task": "dpo", "prompt_template": template.to_dict()}, cfg, {}, base)
        write_metrics(out, final, history)
    if main and "stopped_by" not in final:   # a signal's stop saves the model as it is, and no more
        answers = _answers(model, tok, template, tests, cfg.max_new_tokens)
        with open(out / RESPONSES_FILE, "w", encoding="utf-8") as f:
            for entry, was, now in zip(tests, answers_before, answers):
                f.write(json.dumps({**entry, "response_before": was, "model_response": now}) + "\n")
        if tests:
            say(f"wrote {len(tests)} test responses, before and after, to {out / RESPONSES_FILE}")
    return final


def _without_unfit(pairs: list[Pair], splits: dict[str, np.ndarray], limit: int, say: Say) -> dict[str, np.ndarray]:
    """The splits without the pairs whose prompt alone fills the context: no response
    token of theirs is seen, so both log-probabilities are 0 and they teach nothing."""
    # the first target is the token after the prompt, at input position prompt_len - 1
    unfit = np.array([prompt_len > limit for _, _, prompt_len in pairs])
    kept = {name: rows[~unfit[rows]] for name, rows in splits.items()}
    if not len(kept["train"]):
        raise ValueError(f"no training pair has a response token to score: every prompt is longer than the {limit} "
                         "tokens the model sees (its block_size or --max-length). Start from a model with a larger "
                         "block_size or use a shorter --prompt-template")
    if unfit.any():
        say(f"warning: {int(unfit.sum())} of {len(pairs)} pairs have a prompt longer than the {limit}-token context "
            "and are left out")
    return kept


def _answers(model: GPT, tok: Tokenizer, template: instruct.PromptTemplate, entries: list[dict[str, str]],
             max_new_tokens: int) -> list[str]:
    with model.evaluating():
        return [instruct.generate_response(model, tok, template, e["instruction"], e["input"], max_new_tokens)
                for e in entries]


def plot_dpo(rows: list[dict], path: Path) -> None:
    """The loss (each step, and each evaluation's train and val) beside the val rewards."""
    evals = [r for r in rows if "val_loss" in r]
    fig, (left, right) = step_figure(2)
    draw_losses(left, rows)
    left.axhline(np.log(2), color="grey", lw=0.5, ls="--")    # the loss at step 0, where the policy is the reference
    left.set_ylabel("DPO loss")
    for key in ("val_chosen_reward", "val_rejected_reward", "val_reward_margin", "val_reward_accuracy"):
        right.plot([r["step"] for r in evals], [r[key] for r in evals], "o-", label=key[4:].replace("_", " "))
    right.set_ylabel("val rewards (accuracy as a fraction)")
    save_figure(fig, [left, right], path)
