"""Instruction following: Alpaca-style data, prompts, and next-token batches with masks.

    read_instructions(path)            [{"instruction", "input", "output"}] from JSON or JSONL
    PromptTemplate / ALPACA            how an entry becomes a prompt (the response follows it)
    encode_example(tok, tmpl, entry)   prompt ids + response ids + <|endoftext|>, and the prompt length
                                       (a model's own chat template instead: gpt/train/chat_tuning.py)
    collate(examples, pad_id)          inputs (B, T) and targets (B, T) with ignore_index where nothing is learned
    Instructions(...)                  the task: shuffled epochs, the summed next-token loss, loss per split
    generate_response(model, ...)      the model's answer to one instruction

One training sequence is  prompt | response | <|endoftext|>. The prompt and the
response are tokenized separately, so the model learns to continue exactly the
ids it will be given at generation time (the prompt alone).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from bpe import Tokenizer
from tinytensor import Tensor, nn
from tinytensor.functional import IGNORE_INDEX

from .data import EOT, read_text
from .epochs import EpochBatches, EpochTask
from .distributed import Comm
from .loop import Batch, summed

if TYPE_CHECKING:
    from .chat_tuning import ChatPromptTemplate

SPLIT = (0.85, 0.05, 0.10)          # train / val / test


@dataclass(frozen=True)
class PromptTemplate:
    """`with_input` is used when the entry's input is non-empty, `without_input`
    otherwise; both contain `{instruction}`, `with_input` also `{input}`. The
    response text is appended right after the formatted prompt."""

    with_input: str
    without_input: str

    def __post_init__(self) -> None:
        for name, needed in (("with_input", ("{instruction}", "{input}")), ("without_input", ("{instruction}",))):
            missing = [k for k in needed if k not in getattr(self, name)]
            if missing:
                raise ValueError(f"prompt template {name!r} lacks the placeholder(s) {missing}")

    def format(self, instruction: str, input: str = "") -> str:
        if input.strip():
            return self.with_input.replace("{instruction}", instruction).replace("{input}", input)
        return self.without_input.replace("{instruction}", instruction)

    # what every template offers (ChatPromptTemplate too): the prompt, its ids, an encoded
    # example with its prompt length, the ids that end a response, and how it is stored
    def prompt(self, instruction: str, input: str = "") -> str:
        return self.format(instruction, input)

    def prompt_ids(self, tok: Tokenizer, instruction: str, input: str = "") -> list[int]:
        return tok.encode(self.prompt(instruction, input))

    def encode(self, tok: Tokenizer, entry: dict[str, str]) -> tuple[list[int], int]:
        """(prompt + response + <|endoftext|> ids, number of prompt ids)."""
        eos = end_of_text_id(tok)
        prompt = self.prompt_ids(tok, entry["instruction"], entry.get("input", ""))
        return prompt + tok.encode(entry["output"]) + [eos], len(prompt)

    def stop_ids(self, tok: Tokenizer) -> list[int]:
        return [end_of_text_id(tok)]

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PromptTemplate | ChatPromptTemplate":
        """An Alpaca-style template, or (with "kind": "chat") a model's chat template."""
        if isinstance(d, dict) and d.get("kind") == "chat":
            from .chat_tuning import ChatPromptTemplate

            return ChatPromptTemplate.from_dict(d)
        return cls(d["with_input"], d["without_input"])

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "PromptTemplate":
        """A JSON file {"with_input": "...", "without_input": "..."}."""
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(d, dict) or set(d) != {"with_input", "without_input"}:
            raise ValueError(f"{path}: a prompt template is a JSON object with exactly 'with_input' and 'without_input'")
        return cls.from_dict(d)


_PREAMBLE = ("Below is an instruction that describes a task. "
             "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}")
ALPACA = PromptTemplate(
    with_input=_PREAMBLE + "\n\n### Input:\n{input}\n\n### Response:\n",
    without_input=_PREAMBLE + "\n\n### Response:\n",
)


def read_instructions(path: str | os.PathLike) -> list[dict[str, str]]:
    """Entries with "instruction", "input" ("" when absent) and "output", from a
    JSON list or a JSONL file. Raises ValueError on a malformed entry or an empty set."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset at {path}")
    text = read_text(path, hint=None)
    if path.suffix == ".jsonl":
        rows = [_parse_json(line, path, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        rows = _parse_json(text, path, 0)
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of {{instruction, input, output}} objects")
    entries = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) or not isinstance(row.get("output"), str):
            raise ValueError(f"{path}: entry {n} needs string fields 'instruction' and 'output' ('input' optional)")
        entries.append({"instruction": row["instruction"], "input": str(row.get("input") or ""), "output": row["output"]})
    if not entries:
        raise ValueError(f"{path} holds no examples")
    return entries


def _parse_json(text: str, path: Path, line: int) -> Any:
    """JSON with errors that name the file and line (`line` is where `text` starts, 0 for a whole file)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {line or e.lineno}: not valid JSON ({e.msg})") from None


def encode_example(tok: Tokenizer, template: "PromptTemplate | ChatPromptTemplate",
                   entry: dict[str, str]) -> tuple[list[int], int]:
    """(prompt + response + end ids, number of prompt ids), as the template encodes them."""
    return template.encode(tok, entry)


def end_of_text_id(tok: Tokenizer) -> int:
    if EOT not in tok.special_tokens:
        raise ValueError(f"instruction tuning needs a tokenizer with the special token {EOT}")
    return tok.special_tokens[EOT]


def collate(examples: Sequence[tuple[Sequence[int], int]], pad_id: int, mask_prompt: bool = False,
            max_length: int | None = None, ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray, int]:
    """Inputs and next-token targets (B, T) for sequences s of length L:

        inputs[b, j]  = s[j]       for j < L - 1, then pad_id
        targets[b, j] = s[j + 1]   for j < L - 1, then ignore_index

    so the final <|endoftext|> of each sequence is a target (the model must learn
    to stop) and every padding position after it is ignored. With mask_prompt the
    targets that are prompt tokens (j + 1 < prompt_len) are ignored too: only the
    response and its end-of-text are learned. `max_length` caps T (the model's
    block_size), keeping each sequence's start; returns how many were cut.
    """
    cut = [list(s[:max_length + 1]) if max_length is not None else list(s) for s, _ in examples]
    truncated = sum(len(c) < len(s) for c, (s, _) in zip(cut, examples))
    T = max(len(c) for c in cut) - 1
    if T < 1:
        raise ValueError("every sequence needs at least 2 tokens (an input and its target)")
    inputs = np.full((len(cut), T), pad_id, dtype=np.int64)          # (B, T)
    targets = np.full((len(cut), T), ignore_index, dtype=np.int64)   # (B, T)
    for b, (seq, (_, prompt_len)) in enumerate(zip(cut, examples)):
        n = len(seq) - 1
        inputs[b, :n] = seq[:-1]
        targets[b, :n] = seq[1:]
        if mask_prompt:
            targets[b, :min(prompt_len - 1, n)] = ignore_index
    return inputs, targets, truncated


def generate_response(model: Any, tok: Tokenizer, template: "PromptTemplate | ChatPromptTemplate",
                      instruction: str, input: str = "", max_new_tokens: int = 256, temperature: float = 0.0,
                      seed: int | None = None) -> str:
    """The model's answer to one instruction: greedy by default, stopped at the template's end
    (<|endoftext|>; a chat template's end of turn). A prompt longer than block_size keeps its
    last block_size - 1 ids; once the answer grows past block_size the context slides (the
    model forgets the start)."""
    stops = template.stop_ids(tok)
    prompt = template.prompt_ids(tok, instruction, input)[-(model.config.block_size - 1):]
    out = model.generate([prompt], max_new_tokens, temperature=temperature, eos_id=stops, seed=seed)
    new = [int(t) for t in out[0, len(prompt):]]
    end = next((i for i, t in enumerate(new) if t in stops), len(new))
    return tok.decode(new[:end]).strip()


class Instructions(EpochTask):
    """Instruction tuning: shuffled mini-batches of the train split for the configured
    epochs; the loss is summed over the targets that are learned (see collate);
    evaluation reports the mean loss per target token of the train and val splits."""

    def __init__(self, encoded: list[tuple[list[int], int]], splits: dict[str, np.ndarray], pad: int, limit: int,
                 mask_prompt: bool, batch_size: int, epochs: int, seed: int, eval_batches: int | None):
        self.encoded, self.splits, self.pad, self.limit, self.mask_prompt = encoded, splits, pad, limit, mask_prompt
        self.batch_size, self.eval_batches = batch_size, eval_batches
        self.epochs = EpochBatches(len(splits["train"]), batch_size, epochs, seed)

    def batch(self, rows: np.ndarray) -> Batch:
        inputs, targets, _ = collate([self.encoded[i] for i in rows], self.pad, self.mask_prompt, self.limit)
        learned = int((targets != IGNORE_INDEX).sum())
        # a batch whose every target is masked adds 0 to the loss; dividing by 1 keeps it 0
        return Batch((inputs, targets), n_targets=max(learned, 1), n_tokens=inputs.size)

    def loss(self, model: nn.Module, rows: tuple[Any, ...]) -> Tensor:
        inputs, targets = rows
        return model(inputs, targets=targets, reduction="sum")[1]

    def measure(self, model: nn.Module, split: str, comm: Comm, final: bool) -> float:
        """Mean loss per learned target token (not per batch) over a split."""
        rows = self.splits[split]
        chunks = [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        if not final:
            chunks = chunks[:self.eval_batches]
        loss_sum, n = summed(model, [self.batch(c) for c in chunks], _loss_and_count, comm) if chunks else (0.0, 0)
        return loss_sum / n if n else float("nan")

    def evaluate(self, model: nn.Module, comm: Comm, final: bool) -> dict[str, Any]:
        return {"epoch": self.epochs.epoch, "train_loss": self.measure(model, "train", comm, final),
                "val_loss": self.measure(model, "val", comm, final)}


def _loss_and_count(model: nn.Module, rows: tuple[Any, ...]) -> list[float]:
    inputs, targets = rows
    return [model(inputs, targets=targets, reduction="sum")[1].item(), int((targets != IGNORE_INDEX).sum())]
