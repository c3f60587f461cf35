"""Text classification with a GPT: data, batches and the classifier model.

    read_labeled(path)                 [(label, text)] from TSV / CSV / JSONL
    label_ids(examples, labels)        the label names and each example's id
    balance(examples, seed)            undersample every class to the smallest one
    pad_batch(token_lists, pad_id)     right-padded ids (B, T) and true lengths (B,)
    GPTClassifier(gpt, n_classes)      GPT body -> hidden state of the last real token -> linear head

The language-model head (vocabulary logits) is not used: a causal model's last
position is the only one that has seen the whole text, so its hidden state is
what the new head reads. With right padding that position is `length - 1`,
not `T - 1`; padding after it cannot leak back, attention being causal.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import tinytensor as tt
import tinytensor.functional as F
from tinytensor import Tensor, nn
from tinytensor.backend import get_array_module, to_device

from .model import GPT

TRAINABLE = ("all", "last-block", "head")


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
    examples: list[tuple[str, str]] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                examples.append((str(row["label"]), str(row["text"])))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{n}: expected a JSON object with 'text' and 'label'") from None
    elif path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if not row:
                    continue
                if len(row) != 2:
                    raise ValueError(f"{path}:{n}: expected 2 columns label,text, got {len(row)}")
                if n == 1 and [c.strip().lower() for c in row] == ["label", "text"]:
                    continue
                examples.append((row[0], row[1]))
    else:
        for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
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


# ---- model ------------------------------------------------------------------------
class GPTClassifier(nn.Module):
    """A GPT body with a linear head over `n_classes` on the last real token.

    State-dict names: `gpt.*` for the body (a pretrained GPT's names, prefixed)
    and `head.weight` / `head.bias`.
    """

    def __init__(self, gpt: GPT, n_classes: int):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.n_embd, n_classes, dtype=gpt.wte.weight.dtype, device=gpt.wte.weight.device)

    def forward(self, idx: Any, lengths: Any) -> Tensor:
        """Class logits (B, n_classes) for right-padded ids (B, T) with true lengths (B,)."""
        x = self.gpt.hidden_states(idx)                      # (B, T, C)
        B, T = x.shape[:2]
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
            raise ValueError(f"lengths must be {B} numbers between 1 and {T} (one per row of ids), got {lengths}")
        xp = get_array_module(x.data)
        lengths = to_device(lengths, x.device)
        last = x[xp.arange(B), lengths - 1]                  # (B, C): the last real token of each row
        return self.head(self.gpt.ln_f(last))                # (B, n_classes); ln_f is per position

    def set_trainable(self, which: str) -> None:
        """Which parameters train: "all"; "last-block" (last block, final norm and
        head, the book's default); "head" (the new head only)."""
        if which not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {which!r}")
        for p in self.parameters():
            p.requires_grad = which == "all"
        parts = [self.head] + ([self.gpt.h[-1], self.gpt.ln_f] if which == "last-block" else [])
        for part in parts:
            for p in part.parameters():
                p.requires_grad = True


def classification_loss(model: GPTClassifier, idx: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> tuple[Tensor, int]:
    """(mean cross-entropy, number of correct predictions) of one batch."""
    logits = model(idx, lengths)                             # (B, K)
    targets = to_device(labels, logits.device)
    loss = F.cross_entropy(logits, targets)
    correct = int((logits.data.argmax(axis=-1) == targets).sum())
    return loss, correct


def predict_proba(model: GPTClassifier, token_lists: Sequence[Sequence[int]], pad_id: int,
                  max_length: int | None = None, batch_size: int = 32) -> np.ndarray:
    """Class probabilities (N, n_classes) for tokenized texts, in eval mode without a graph."""
    limit = min(max_length or model.gpt.config.block_size, model.gpt.config.block_size)
    was_training = model.training
    model.eval()
    out = []
    try:
        with tt.no_grad():
            for start in range(0, len(token_lists), batch_size):
                idx, lengths, _ = pad_batch(token_lists[start:start + batch_size], pad_id, limit)
                probs = F.softmax(model(idx, lengths), axis=-1)
                out.append(probs.numpy().astype(np.float64))
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.head.out_features))
