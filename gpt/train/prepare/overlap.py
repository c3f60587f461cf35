"""Contamination: the share of val's distinct 13-grams (lower-cased words, as in GPT-3's
test) that also occur in train, or in a file given with --check-against.

Every 13-gram's hash is computed, but only those below a threshold are kept, and the
threshold halves whenever the sample outgrows its budget. Train and val are sampled
by the same hash, so a 13-gram kept on one side is kept on the other when present:
the share is estimated without bias, in memory that does not grow with the corpus.
"""
from __future__ import annotations

import numpy as np

NGRAM = 13
BUDGET = 1 << 21          # distinct hashes kept per side
FIRST_THRESHOLD = np.uint64(1 << 61)   # the workers keep 1 in 8 to begin with


class NgramSample:
    def __init__(self) -> None:
        self.threshold = FIRST_THRESHOLD
        self.sides: dict[str, list[np.ndarray]] = {"train": [], "val": []}
        self.sizes = {"train": 0, "val": 0}

    def add(self, side: str, hashes: np.ndarray) -> None:
        hashes = hashes[hashes < self.threshold]
        self.sides[side].append(hashes)
        self.sizes[side] += len(hashes)
        if self.sizes[side] > 2 * BUDGET:
            self._compact(side)

    def _compact(self, side: str) -> None:
        merged = np.unique(np.concatenate(self.sides[side])) if self.sides[side] else np.zeros(0, np.uint64)
        while len(merged) > BUDGET:
            self.threshold = self.threshold // np.uint64(2)
            merged = merged[merged < self.threshold]
        self.sides[side], self.sizes[side] = [merged], len(merged)

    def distinct(self, side: str) -> np.ndarray:
        self._compact(side)
        return self.sides[side][0][self.sides[side][0] < self.threshold]

    def overlap(self, other: np.ndarray | None = None) -> float | None:
        """The share of val's sampled 13-grams (or `other`'s) found in train; None when there are none."""
        train = self.distinct("train")
        probe = self.distinct("val") if other is None else np.unique(other[other < self.threshold])
        if not len(probe):
            return None
        return float(np.isin(probe, train, assume_unique=True).mean())
