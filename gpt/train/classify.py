"""Text classification with a GPT: the data, and the task the training loop runs.

    read_labeled(path)                 [(label, text)] from TSV / CSV / JSONL
    label_ids(examples, labels)        the label names and each example's id
    balance(examples, seed)            undersample every class to the smallest one
    pad_batch(token_lists, pad_id)     right-padded ids (B, T) and true lengths (B,)
    Classification(...)                the task: shuffled epochs, summed cross-entropy, loss and accuracy per split
    predict_proba(model, ...)          class probabilities of tokenized texts
    classify_texts(model, tok, ...)    the likeliest label of each text, and its probability

The model is `gpt.GPTClassifier`: the GPT body, then a linear head on the last real token.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import tinytensor as tt
import tinytensor.functional as F
from bpe import Tokenizer
from gpt import GPTClassifier
from tinytensor import Tensor
from tinytensor.backend import to_device

from .data import pad_id, read_text
from .distributed import Comm
from .loop import Batch, summed
from .epochs import EpochBatches, EpochTask

SPLIT = (0.7, 0.1, 0.2)          # train / val / test


# ---- data ------------------------------------------------------------------------
def read_labeled(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(label, text) pairs from a file, in file order.

    - `.jsonl`: one object per line with "text" and "label";
    - `.csv`: two columns label,text with CSV quoting (a header row label,text is skipped);
    - anything else (`.tsv`, `.txt`): `label<TAB>text`, split at the FIRST tab, no
      quoting (the SMS Spam Collection has quote characters inside messages); a
      header line label<TAB>text is skipped.
    Blank lines are skipped. Raises ValueError naming the line of a malformed
    record, or when the file holds no examples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset at {path}")
    text = read_text(path, hint=None)
    examples: list[tuple[str, str]] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                examples.append((str(row["label"]), str(row["text"])))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{n}: expected a JSON object with 'text' and 'label'") from None
    elif path.suffix == ".csv":
        for n, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{n}: expected 2 columns label,text, got {len(row)}")
            if n == 1 and [c.strip().lower() for c in row] == ["label", "text"]:
                continue
            examples.append((row[0], row[1]))
    else:
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            label, tab, text = line.partition("\t")
            if not tab:
                raise ValueError(f"{path}:{n}: no tab: each line must be label<TAB>text")
            if not examples and [label.strip().lower(), text.strip().lower()] == ["label", "text"]:
                continue                                 # a header line
            examples.append((label, text.rstrip("\r")))
    if not examples:
        raise ValueError(f"{path} holds no examples: expected label<TAB>text lines (or JSONL with text and label)")
    return examples


def label_ids(examples: Sequence[tuple[str, str]], labels: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(label names, id of each example's label). Without `labels` the names are
    the distinct labels of the data, sorted; with them (a saved checkpoint's, or
    given on the command line) any other label in the data is an error."""
    found = sorted({label for label, _ in examples})
    names = list(labels) if labels is not None else found
    if len(names) < 2:
        raise ValueError(f"classification needs at least 2 labels, the data has {found}")
    index = {name: i for i, name in enumerate(names)}
    unknown = [label for label in found if label not in index]
    if unknown:
        raise ValueError(f"unknown label(s) {unknown}: the known labels are {names}")
    return names, np.array([index[label] for label, _ in examples], dtype=np.int64)


def balance(items: Sequence[Any], ids: np.ndarray, seed: int) -> tuple[list[Any], np.ndarray]:
    """Undersample every class to the size of the smallest one (seeded), keeping file order."""
    rng = np.random.default_rng(seed)
    present = np.unique(ids)
    smallest = min(int((ids == c).sum()) for c in present)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(ids == c), smallest, replace=False) for c in present]))
    return [items[i] for i in keep], ids[keep]


def pad_batch(token_lists: Sequence[Sequence[int]], pad_id: int, max_length: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Right-pad to the longest sequence (at most `max_length`, longer ones keep
    their first max_length tokens). Returns ids (B, T), lengths (B,) and how
    many sequences were truncated. An empty text becomes one pad token, so
    every row has a last real position."""
    lengths = np.array([max(1, min(len(t), max_length)) for t in token_lists], dtype=np.int64)
    truncated = sum(len(t) > max_length for t in token_lists)
    ids = np.full((len(token_lists), int(lengths.max())), pad_id, dtype=np.int64)   # (B, T)
    for row, tokens in enumerate(token_lists):
        ids[row, :min(len(tokens), max_length)] = tokens[:max_length]
    return ids, lengths, truncated




# ---- the task ----------------------------------------------------------------------
class Classification(EpochTask):
    """Fine-tuning a GPTClassifier: shuffled mini-batches of the train split for the
    configured epochs; evaluation reports loss and accuracy of every split."""

    def __init__(self, tokens: list[list[int]], ids: np.ndarray, splits: dict[str, np.ndarray], pad: int,
                 limit: int, batch_size: int, epochs: int, seed: int, eval_batches: int | None):
        self.tokens, self.ids, self.splits = tokens, ids, splits
        self.pad, self.limit, self.batch_size, self.seed = pad, limit, batch_size, seed
        self.max_eval_batches = eval_batches
        self.epochs = EpochBatches(len(splits["train"]), batch_size, epochs, seed)

    def batch(self, rows: np.ndarray) -> Batch:
        """Rows of the dataset as a Batch of (ids (B, T), lengths (B,), labels (B,))."""
        idx, lengths, _ = pad_batch([self.tokens[i] for i in rows], self.pad, self.limit)
        return Batch((idx, lengths, self.ids[rows]), n_targets=len(rows), n_tokens=int(lengths.sum()))

    def loss(self, model: GPTClassifier, rows: tuple[Any, ...]) -> Tensor:
        logits, targets = _logits(model, rows)
        return F.cross_entropy(logits, targets, reduction="sum")

    def eval_batches(self, rows: np.ndarray, final: bool) -> list[Batch]:
        """Batches of similar length (less padding); a seeded choice of eval_batches of them unless final."""
        rows = rows[np.argsort([len(self.tokens[i]) for i in rows], kind="stable")]
        size = self.batch_size * 4
        chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
        if not final and self.max_eval_batches is not None and len(chunks) > self.max_eval_batches:
            picks = np.random.default_rng(self.seed).choice(len(chunks), self.max_eval_batches, replace=False)
            chunks = [chunks[i] for i in picks]
        return [self.batch(chunk) for chunk in chunks]

    def evaluate(self, model: GPTClassifier, comm: Comm, final: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"epoch": self.epochs.epoch}
        for name, rows in self.splits.items():
            loss_sum, correct, n = summed(model, self.eval_batches(rows, final), _loss_correct_count, comm)
            row[f"{name}_loss"], row[f"{name}_acc"] = (loss_sum / n, correct / n) if n else (float("nan"),) * 2
        return row


def _logits(model: GPTClassifier, rows: tuple[Any, ...]) -> tuple[Tensor, Any]:
    idx, lengths, labels = rows
    logits = model(idx, lengths)                             # (B, K)
    return logits, to_device(labels, logits.device)


def _loss_correct_count(model: GPTClassifier, rows: tuple[Any, ...]) -> list[float]:
    logits, targets = _logits(model, rows)
    correct = int((logits.data.argmax(axis=-1) == targets).sum())
    return [F.cross_entropy(logits, targets, reduction="sum").item(), correct, len(targets)]


def predict_proba(model: GPTClassifier, token_lists: Sequence[Sequence[int]], pad_id: int,
                  max_length: int | None = None, batch_size: int = 32) -> np.ndarray:
    """Class probabilities (N, n_classes) for tokenized texts, in eval mode without a graph."""
    limit = min(max_length or model.gpt.config.block_size, model.gpt.config.block_size)
    out = []
    with model.evaluating():
        with tt.no_grad():
            for start in range(0, len(token_lists), batch_size):
                idx, lengths, _ = pad_batch(token_lists[start:start + batch_size], pad_id, limit)
                probs = F.softmax(model(idx, lengths), axis=-1)
                out.append(probs.numpy().astype(np.float64))
    return np.concatenate(out) if out else np.zeros((0, model.head.out_features))


def classify_texts(model: GPTClassifier, tok: Tokenizer, labels: Sequence[str], texts: Sequence[str],
                   max_length: int | None = None) -> list[tuple[str, float]]:
    """(label, probability) of the likeliest class for each text."""
    probs = predict_proba(model, tok.encode_batch(list(texts)), pad_id(tok), max_length)
    return [(labels[int(p.argmax())], float(p.max())) for p in probs]
