"""Shuffled mini-batches, epoch after epoch: how the fine-tuning tasks walk their training split."""
from __future__ import annotations

from typing import Any

import numpy as np

from .loop import Batch
from .metrics import format_row


class EpochBatches:
    """Positions 0..n-1 in mini-batches of `batch_size`, reshuffled (seeded) at every
    epoch; the last batch of an epoch holds what is left. `total` steps cover `epochs` epochs."""

    def __init__(self, n: int, batch_size: int, epochs: int, seed: int):
        if n < 1:
            raise ValueError("no training examples: give more data")
        self.n, self.batch_size = n, batch_size
        self.steps_per_epoch = -(-n // batch_size)
        self.total = epochs * self.steps_per_epoch
        self.rng = np.random.default_rng(seed)
        self.epoch, self._order, self._next = 0, np.arange(0), 0

    def next(self) -> np.ndarray:
        if self._next >= len(self._order):
            self._order, self._next = self.rng.permutation(self.n), 0
            self.epoch += 1
        rows = self._order[self._next:self._next + self.batch_size]
        self._next += self.batch_size
        return rows


class EpochTask:
    """What the fine-tuning tasks share: the training micro-batches are shuffled epochs
    over splits["train"]; a subclass turns dataset rows into a Batch (`batch`) and
    supplies its loss and evaluation. Nothing to save: fine-tunes do not resume."""
    splits: dict[str, np.ndarray]
    epochs: EpochBatches

    def batch(self, rows: np.ndarray) -> Batch:
        raise NotImplementedError

    def next_batch(self) -> Batch:
        return self.batch(self.splits["train"][self.epochs.next()])

    def describe(self, row: dict[str, Any]) -> str:
        return format_row(row)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
