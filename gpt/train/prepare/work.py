"""What is done to each document, in parallel: repair, quality, language, hashes, tokens.

The work is split into batches of documents; each batch goes to a worker process
and comes back as one Result per document, with NumPy arrays (which cross between
processes as raw bytes). Results are taken back in the order the batches were
sent, so the output is the same for any number of workers; a bounded number of
batches is in flight at once, so memory does not grow with the corpus.
"""
from __future__ import annotations

import multiprocessing
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from bpe import Tokenizer

from .dedup import MinHasher
from .hashing import WordHasher, document_hash, ngram_hashes, unit_interval
from .language import LanguageFilter
from .optional import require
from .overlap import FIRST_THRESHOLD, NGRAM
from .quality import QualityRules
from .settings import PrepareConfig

BATCH_CHARS = 1 << 20       # text per batch sent to a worker
IN_FLIGHT_PER_WORKER = 2
INLINE_CHARS = 1 << 20      # a corpus smaller than this is done in this process: no pool to start


@dataclass
class Result:
    dropped: tuple[str, str] | None    # (stage, reason) of a document filtered out, else None
    key: bytes = b""                    # the normalised text's hash: exact duplicates and the split
    val: bool = False
    signature: np.ndarray | None = None  # MinHash, with --near-dedup
    ngrams: np.ndarray | None = None     # sampled 13-gram hashes, with the overlap report
    tokens: np.ndarray | None = None


class DocumentWork:
    """The per-document steps the settings ask for, set up once per process."""

    def __init__(self, cfg: PrepareConfig, tokenizer: Tokenizer, dtype: np.dtype):
        self.cfg, self.tokenizer, self.dtype = cfg, tokenizer, dtype
        self.ftfy = require("ftfy", "--fix-text") if cfg.fix_text else None
        self.language = LanguageFilter(cfg.lang, cfg.lang_confidence) if cfg.lang else None
        self.quality = QualityRules() if cfg.quality else None
        self.minhash = MinHasher() if cfg.near_dedup else None
        self.words = WordHasher()

    def __call__(self, texts: list[str]) -> list[Result]:
        return [self.one(text) for text in texts]

    def one(self, text: str) -> Result:
        if self.ftfy is not None:
            text = self.ftfy.fix_text(text)
        # quality first: the rules catch the scraps (a heading, a table) that language ID would guess at
        if self.quality is not None and (rule := self.quality.reason(text)):
            return Result(("quality", rule))
        if self.language is not None and (lang := self.language.reason(text)):
            return Result(("language", lang))
        key = document_hash(text)
        result = Result(None, key, unit_interval(key) < self.cfg.val_fraction)
        if self.minhash is not None or self.cfg.overlap:
            words = self.words.words(text)
            if self.minhash is not None:
                result.signature = self.minhash.signature(words)
            if self.cfg.overlap:
                grams = ngram_hashes(words, NGRAM)
                result.ngrams = grams[grams < FIRST_THRESHOLD]
        # "none": a literal "<|endoftext|>" inside a document stays text; only our joins are separators
        result.tokens = np.asarray(self.tokenizer.encode(text, allowed_special="none"), dtype=self.dtype)
        return result


def batches(texts: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


_work: DocumentWork | None = None


def _init(work: DocumentWork) -> None:
    global _work
    _work = work


def _run(texts: list[str]) -> list[Result]:
    assert _work is not None
    return _work(texts)


def process(work: DocumentWork, texts: Iterable[str], workers: int) -> Iterator[Result]:
    """work() of every text, in order. The first INLINE_CHARS are done here; if there
    is more, forked workers (which inherit `work`) do the rest."""
    pending = batches(texts)
    done = 0
    for batch in pending:
        yield from work(batch)
        done += sum(map(len, batch))
        if done >= INLINE_CHARS and workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            break
    else:
        return
    with multiprocessing.get_context("fork").Pool(workers, _init, (work,)) as pool:
        in_flight: deque[Any] = deque()
        for batch in pending:
            in_flight.append(pool.apply_async(_run, (batch,)))
            if len(in_flight) >= IN_FLIGHT_PER_WORKER * workers:
                yield from in_flight.popleft().get()
        while in_flight:
            yield from in_flight.popleft().get()
