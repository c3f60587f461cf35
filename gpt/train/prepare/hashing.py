"""Stable 64-bit hashes of words and of runs of words (n-grams), computed with NumPy.

Python's hash() changes from run to run; these do not, so the same corpus gives the
same shingles, the same near-duplicates and the same overlap sample every time.
"""
from __future__ import annotations

import hashlib

import numpy as np
import regex

WORD = regex.compile(r"\w+")
MULT = np.uint64(0x9E3779B97F4A7C15)      # odd, so multiplying mixes every bit upward


def normalized(text: str) -> str:
    """Case and whitespace folded: what exact duplicates are compared on."""
    return " ".join(text.lower().split())


def document_hash(text: str) -> bytes:
    """16 bytes identifying a document's normalised text (exact duplicates share it)."""
    return hashlib.blake2b(normalized(text).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def unit_interval(digest: bytes) -> float:
    """A document hash as a number in [0, 1): which split it goes to."""
    return int.from_bytes(digest[:8], "little") / 2.0 ** 64


class WordHasher:
    """Word -> 64-bit hash, remembered (a corpus reuses few distinct words)."""

    def __init__(self, limit: int = 1 << 20):
        self.cache: dict[str, int] = {}
        self.limit = limit

    def words(self, text: str) -> np.ndarray:
        """The hashes of `text`'s lower-cased words, in order (uint64)."""
        cache = self.cache
        if len(cache) > self.limit:
            cache.clear()
        words = WORD.findall(text.lower())
        for w in set(words).difference(cache):
            cache[w] = int.from_bytes(hashlib.blake2b(w.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                      "little")
        return np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words))


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """One uint64 per run of n consecutive words (none when there are fewer than n words)."""
    count = len(word_hashes) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):     # wrapping multiplication is the point
        h = np.zeros(count, dtype=np.uint64)
        for j in range(n):
            h = h * MULT + word_hashes[j:j + count]
        h ^= h >> np.uint64(31)          # mix, so the low values (the sample kept) are spread evenly
        h *= MULT
        h ^= h >> np.uint64(29)
    return h
