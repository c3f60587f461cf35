"""Scoring a language model: how likely it finds a text, and which ending it prefers.

    sliding_windows(n, context, stride)    the windows that score every token but the first exactly once
    token_nll(model, inputs, targets)      -log p(target | the inputs up to it), per position
    score_tokens(model, ids, ...)          a TextScore: tokens, nats, bytes -> perplexity, bits per byte
    byte_lengths(tok, vocab_size)          the UTF-8 bytes behind each id (special tokens: 0)
    choice_nll(model, context, endings)    the summed NLL and the length of each ending after a context

Bits per byte = total nats / ln 2 / the bytes of the scored tokens: unlike
perplexity, it does not depend on how the tokenizer cuts the text, so it
compares models with different vocabularies on the same text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

import tinytensor as tt
import tinytensor.functional as F
from bpe import Tokenizer
from tinytensor.backend import to_device

from .model import GPT

# rows of logits the LM head makes at a time: 2^24 numbers (64 MB in float32) whatever the vocabulary
HEAD_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class Window:
    """Inputs ids[start:stop] predict ids[start + 1:stop + 1]; the predictions of input
    offsets >= first are scored (the earlier ones were scored by an earlier window)."""
    start: int
    stop: int
    first: int


def sliding_windows(n: int, context: int, stride: int) -> list[Window]:
    """The windows over n tokens: window k feeds tokens [kS, kS + N) (cut at the last
    token but one) and scores the predictions no earlier window made. So every token
    but the first is scored exactly once, each after at least N - S tokens of context
    (all earlier ones inside the first window). stride = context: disjoint windows."""
    if context < 1 or not 1 <= stride <= context:
        raise ValueError(f"need context >= 1 and 1 <= stride <= context, got context {context}, stride {stride}")
    windows, start, scored = [], 0, 0      # scored: the targets 1..scored are done
    while scored < n - 1:
        stop = min(start + context, n - 1)
        windows.append(Window(start, stop, scored - start))
        scored, start = stop, start + stride
    return windows


def token_nll(model: GPT, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(B, T) float64: -log p(targets[b, t] | inputs[b, :t + 1]), 0 where the target is
    F.IGNORE_INDEX. The LM head runs at the scored positions only, a block of rows at a
    time: at a large vocabulary it costs as much as the blocks, and a window that
    overlaps the last one scores only its new part."""
    targets = np.asarray(targets)
    keep = np.flatnonzero(targets.reshape(-1) != F.IGNORE_INDEX)          # (K,)
    out = np.zeros(targets.size)
    with tt.no_grad():
        h = model.hidden_states(inputs)                                   # (B, T, C)
        rows = h.data.reshape(-1, h.shape[-1])[to_device(keep, h.device)]   # (K, C)
        wanted = to_device(targets.reshape(-1)[keep], h.device)           # (K,)
        step = max(1, HEAD_ELEMENTS // model.config.vocab_size)
        for i in range(0, len(keep), step):
            logits = model.logits(tt.tensor(rows[i:i + step]))            # (r, V)
            nll = F.cross_entropy(logits, wanted[i:i + step], reduction="none")
            out[keep[i:i + step]] = to_device(nll.data, "cpu")
    return out.reshape(targets.shape)


@dataclass(frozen=True)
class TextScore:
    tokens: int          # tokens scored
    nats: float          # their summed negative log-likelihood
    bytes: int           # their UTF-8 bytes

    @property
    def nats_per_token(self) -> float:
        return self.nats / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token) if self.nats_per_token < 709.0 else math.inf

    @property
    def bits_per_byte(self) -> float:
        return self.nats / math.log(2) / self.bytes if self.bytes else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "nats_per_token": self.nats_per_token, "perplexity": self.perplexity,
                "bits_per_byte": self.bits_per_byte, "bytes": self.bytes}


def byte_lengths(tok: Tokenizer, vocab_size: int) -> np.ndarray:
    """(vocab_size,) int64: the UTF-8 bytes of each token (decode_bytes); special tokens
    and ids past the tokenizer's vocabulary (a model's padding rows) count 0."""
    special = set(tok.special_tokens.values())
    return np.array([0 if i in special or i >= tok.vocab_size else len(tok.decode_bytes([i]))
                     for i in range(vocab_size)], dtype=np.int64)


def window_batches(ids: np.ndarray, windows: Sequence[Window], batch_size: int
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) of batch_size windows at a time, (B, T) int64 each: a short
    last window is padded, and the targets that are not scored are F.IGNORE_INDEX."""
    for i in range(0, len(windows), batch_size):
        group = windows[i:i + batch_size]
        T = max(w.stop - w.start for w in group)
        inputs = np.zeros((len(group), T), dtype=np.int64)                # padding: any valid id
        targets = np.full((len(group), T), F.IGNORE_INDEX, dtype=np.int64)
        for b, w in enumerate(group):
            n = w.stop - w.start
            inputs[b, :n] = ids[w.start:w.stop]
            targets[b, w.first:n] = ids[w.start + w.first + 1:w.stop + 1]
        yield inputs, targets


def score_tokens(model: GPT, ids: Sequence[int] | np.ndarray, context: int, stride: int, token_bytes: np.ndarray,
                 batch_size: int = 8, on_batch: Callable[[int], None] | None = None) -> TextScore:
    """The negative log-likelihood of ids[1:] in sliding windows (see sliding_windows),
    `batch_size` windows per forward; on_batch(windows done) after each batch."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < 2:
        raise ValueError(f"the text encodes to {len(ids)} token(s): scoring needs at least 2 (a context and a target)")
    if context > model.config.block_size:
        raise ValueError(f"context {context} is longer than the model's block_size {model.config.block_size}")
    windows = sliding_windows(len(ids), context, stride)
    nats = 0.0
    for inputs, targets in window_batches(ids, windows, batch_size):
        nats += float(token_nll(model, inputs, targets).sum())
        if on_batch is not None:
            on_batch(len(inputs))
    return TextScore(tokens=len(ids) - 1, nats=nats, bytes=int(token_bytes[ids[1:]].sum()))


def choice_nll(model: GPT, context: Sequence[int], endings: Sequence[Sequence[int]]) -> list[tuple[float, int]]:
    """(summed NLL, tokens) of each ending's tokens following `context`, all endings in
    one batch: row e is context + ending e, padded; only the ending's tokens are
    scored. A row longer than block_size loses context from the left."""
    if not endings or any(len(e) == 0 for e in endings):
        raise ValueError("every ending needs at least one token")
    limit = model.config.block_size + 1                                   # inputs + the last target
    rows = [(list(context) + list(e))[-limit:] for e in endings]
    T = max(len(r) for r in rows) - 1
    inputs = np.zeros((len(rows), T), dtype=np.int64)
    targets = np.full((len(rows), T), F.IGNORE_INDEX, dtype=np.int64)
    for b, (row, ending) in enumerate(zip(rows, endings)):
        n = len(row) - 1
        inputs[b, :n] = row[:-1]
        scored = min(len(ending), n)        # an ending longer than the block keeps its last tokens
        targets[b, n - scored:n] = row[-scored:]
    nll = token_nll(model, inputs, targets)
    return [(float(nll[b].sum()), int((targets[b] != F.IGNORE_INDEX).sum())) for b in range(len(rows))]
