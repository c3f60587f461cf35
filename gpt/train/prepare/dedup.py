"""Deduplication: exact (a hash of the case- and whitespace-folded text) and near
(MinHash over word 5-gram shingles, LSH banding; datasketch). Both keep the first
copy in input order, so the same corpus gives the same kept set for any --workers."""
from __future__ import annotations

import numpy as np

from .hashing import ngram_hashes
from .optional import require

SHINGLE_WORDS = 5
NUM_PERM = 128
SEED = 1
SCHEME = "affine32"
BLOCK = 1 << 14     # shingles per update: the (shingles, NUM_PERM) temporary stays ~8 MB


class MinHasher:
    """A document's MinHash signature (NUM_PERM uint32 values), computed in the workers."""

    def __init__(self) -> None:
        ds = require("datasketch", "--near-dedup")
        self.MinHash = ds.MinHash
        # the permutations, drawn once from the fixed seed rather than for each document
        self.permutations = ds.MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME).permutations

    def signature(self, word_hashes: np.ndarray) -> np.ndarray:
        shingles = ngram_hashes(word_hashes, SHINGLE_WORDS) if len(word_hashes) >= SHINGLE_WORDS else word_hashes
        m = self.MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=int, permutations=self.permutations, scheme=SCHEME)
        values = (shingles >> np.uint64(32)).tolist()     # the scheme takes 32-bit hashes
        for start in range(0, len(values), BLOCK):
            m.update_batch(values[start:start + BLOCK])
        return m.hashvalues


class NearDuplicates:
    """The LSH index of the documents kept so far; `seen` says whether one is a near copy."""

    def __init__(self, threshold: float):
        ds = require("datasketch", "--near-dedup")
        self.LeanMinHash = ds.LeanMinHash
        try:
            self.lsh = ds.MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        except ValueError as e:   # no banding of NUM_PERM values reaches that threshold
            raise ValueError(f"--near-threshold {threshold} cannot be banded from {NUM_PERM} MinHash values ({e}): "
                             "choose a lower one") from None
        self.count = 0

    def seen(self, signature: np.ndarray) -> bool:
        """True when a kept document is probably at least `threshold` similar (Jaccard);
        else the document is added to the index and False."""
        m = self.LeanMinHash(seed=SEED, hashvalues=signature, scheme=SCHEME)
        if self.lsh.query(m):
            return True
        self.lsh.insert(self.count, m, check_duplication=False)
        self.count += 1
        return False
