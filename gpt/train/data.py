"""Training data: a corpus -> a prepared folder of token shards -> batches.

    prepare_data(data, ...)         a prepared folder (python -m gpt prepare) opened as it is, or a raw
                                    corpus prepared once into OUT/data/<key>/ by the same pipeline
                                    (gpt/train/prepare/) and reused while its inputs are unchanged
    BatchSampler(tokens, T, B)      random windows of T + 1 tokens: inputs and next-token targets
    EpochSampler(tokens, T, B)      every window once per pass, in a seeded order (--sampling epoch)
    unigram_loss(train, val, V)     the loss of predicting token frequencies: the baseline to beat

Documents are joined with <|endoftext|>, so the model sees where one ends and
the next begins. The shards hold the ids as uint16 (uint32 when the vocabulary
does not fit), read back through memory maps: a corpus larger than memory costs
only the pages a batch touches. Every shard's size and sha256 are checked when
the folder is opened, so a shard cut short is an error, never silent training
on part of the data.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bpe import Tokenizer

# EOT, TOKENIZERS and token_dtype are also this module's names, as the training code has always imported them
from .prepare import EOT, TOKENIZERS, PrepareConfig, TokenStream, is_prepared, open_prepared, prepare, token_dtype  # noqa: F401
from .prepare.sources import fingerprint
from .prepare.tokenizer import build_tokenizer, tokenizer_digest, tokenizer_files

SAMPLING = ("random", "epoch")


def pad_id(tok: Tokenizer) -> int:
    # any id works for padding (targets there are ignored, and attention is causal); end-of-text is GPT-2's choice
    return tok.special_tokens.get(EOT, 0)


# bump when the cache layout or the way tokens are produced changes, so old caches are not reused
CACHE_VERSION = 2

# ---- a corpus, prepared -------------------------------------------------------

def read_text(path: Path, errors: str = "strict", hint: str | None = "pass --errors replace") -> str:
    """A file's text as UTF-8. Undecodable bytes are an error naming the file, line and
    column (with `hint`, how else to read them), or U+FFFD with errors="replace"."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        fix = f"; fix the file, or {hint} to read such bytes as U+FFFD" if hint else "; save the file as UTF-8"
        raise ValueError(
            f"{path} is not valid UTF-8: byte {e.start} (line {line}, column {column}) is "
            f"{raw[e.start:e.end]!r} ({e.reason}){fix}"
        ) from None



@dataclass
class PreparedData:
    folder: Path          # the prepared folder: shards, tokenizer.json, meta.json
    tokenizer: Tokenizer
    train: TokenStream
    val: TokenStream
    meta: dict            # meta.json: counts, tokens, shards, settings, key
    cached: bool          # True when an earlier run's folder was used


def prepare_data(data: str | os.PathLike | None, tokenizer: str | None, cache_dir: str | os.PathLike,
                 vocab_size: int = 1024, gpt2_vocab: str | os.PathLike | None = None,
                 val_fraction: float = 0.1, errors: str = "strict") -> PreparedData:
    """`data` when it is a prepared folder (its tokenizer must be the one asked for,
    if one is); else the corpus prepared into `cache_dir/<key>/`, or what an earlier
    call left there. The key hashes the inputs, the tokenizer choice and the split,
    so changing any of them prepares afresh."""
    if is_prepared(data):
        found = open_prepared(data, fix=f"prepare it again with python -m gpt prepare --out {data} --overwrite")
        _check_tokenizer(found.folder, found.meta, tokenizer, vocab_size, gpt2_vocab)
        return PreparedData(found.folder, found.tokenizer, found.train, found.val, found.meta, cached=True)
    tokenizer = tokenizer or "bpe"
    key = _cache_key(data, tokenizer, vocab_size, gpt2_vocab, val_fraction, errors)
    folder = Path(cache_dir) / key
    cached = is_prepared(folder)
    if not cached:
        prepare(PrepareConfig(data=None if data is None else (str(data),), out=str(folder), overwrite=True,
                              errors=errors, tokenizer=tokenizer, vocab_size=vocab_size,
                              gpt2_vocab=None if gpt2_vocab is None else str(gpt2_vocab),
                              val_fraction=val_fraction, overlap=False, progress=False))
    found = open_prepared(folder, fix=f"delete {cache_dir} to rebuild it")
    return PreparedData(folder, found.tokenizer, found.train, found.val, found.meta, cached)


def _check_tokenizer(folder: Path, meta: dict, kind: str | None, vocab_size: int, gpt2_vocab: Any) -> None:
    """A prepared folder is read with its own tokenizer; a --tokenizer given must be that one."""
    if kind is None:
        return
    settings = meta.get("settings", {})
    if kind == "bpe":
        same = settings.get("tokenizer") == "bpe" and settings.get("vocab_size") == vocab_size
    else:
        same = tokenizer_digest(build_tokenizer(kind, None, vocab_size, gpt2_vocab)) == meta["tokenizer_sha256"]
    if not same:
        raise ValueError(f"{folder} was prepared with another tokenizer (--tokenizer {settings.get('tokenizer')!r}, "
                         f"vocabulary {meta['vocab_size']}) than --tokenizer {kind!r}: drop --tokenizer to use the "
                         "folder's own, or prepare the corpus again with this one")


def _cache_key(data: Any, tokenizer: str, vocab_size: int, gpt2_vocab: Any, val_fraction: float,
               errors: str) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION} val_fraction={val_fraction!r} errors={errors}\n".encode())
    if tokenizer == "bpe":
        h.update(f"bpe vocab_size={vocab_size}\n".encode())
    elif tokenizer == "bytes":
        h.update(b"bytes\n")
    else:  # gpt2 or a file: hash the files' contents, not their names
        h.update(f"{tokenizer if tokenizer == 'gpt2' else 'file'}\n".encode())
        for p in tokenizer_files(tokenizer, gpt2_vocab):
            h.update(p.read_bytes())
    h.update(fingerprint(None if data is None else [str(data)]).encode())
    return h.hexdigest()[:16]


# ---- batches -------------------------------------------------------------------

class BatchSampler:
    """Random windows of `block_size + 1` tokens from one split, drawn with a
    generator of its own, so its state can be saved and a resumed run draws
    exactly the batches an uninterrupted one would have."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int | list[int],
                 name: str = "train"):
        if len(tokens) < block_size + 1:
            raise ValueError(
                f"the {name} split has {len(tokens)} tokens, fewer than block_size + 1 = {block_size + 1}: "
                "use a longer corpus, a smaller --block-size, or (for val) a larger --val-fraction"
            )
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.rng = np.random.default_rng(seed)
        self._offsets = np.arange(block_size + 1)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets), each (batch_size, block_size) int64; targets are inputs shifted by one."""
        starts = self.rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)
        windows = self.tokens[starts[:, None] + self._offsets].astype(np.int64)   # (B, T + 1)
        return windows[:, :-1], windows[:, 1:]

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state


class EpochSampler:
    """Each pass over the split takes every window of `block_size + 1` tokens that starts at
    a multiple of block_size exactly once, in an order drawn afresh for each pass from
    (seed, pass). Its state is where it is: the pass and the position in that pass's order."""

    def __init__(self, tokens: Any, block_size: int, batch_size: int, seed: int | list[int], name: str = "train"):
        BatchSampler(tokens, block_size, batch_size, 0, name)     # the same check of the split's length
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.seed = [seed] if isinstance(seed, int) else list(seed)
        self.windows = (len(tokens) - 1) // block_size            # starts 0, T, 2T, ... with T + 1 tokens each
        self.epoch, self.position = 0, 0
        self._order = self._permutation()
        self._offsets = np.arange(block_size + 1)

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([*self.seed, self.epoch]).permutation(self.windows)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        picked, need = [], self.batch_size
        while need:                                   # a batch may end one pass and begin the next
            take = self._order[self.position:self.position + need]
            picked.append(take)
            need -= len(take)
            self.position += len(take)
            if self.position == self.windows:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
        starts = np.concatenate(picked) * self.block_size
        windows = self.tokens[starts[:, None] + self._offsets].astype(np.int64)   # (B, T + 1)
        return windows[:, :-1], windows[:, 1:]

    def steps_per_epoch(self, grad_accum: int = 1) -> float:
        return self.windows / (self.batch_size * grad_accum)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        epoch, position = state.get("epoch"), state.get("position")
        if not (isinstance(epoch, int) and isinstance(position, int) and 0 <= position < self.windows and epoch >= 0):
            raise ValueError(f"the checkpoint's epoch sampler state {state!r} does not fit this split "
                             f"({self.windows} windows)")
        self.epoch, self.position = epoch, position
        self._order = self._permutation()


def make_sampler(kind: str, tokens: Any, block_size: int, batch_size: int, seed: int | list[int],
                 name: str = "train") -> BatchSampler | EpochSampler:
    """--sampling random (windows anywhere, drawn independently) or epoch (each window once per pass)."""
    return (EpochSampler if kind == "epoch" else BatchSampler)(tokens, block_size, batch_size, seed, name)


def _chunks(tokens: Any) -> Any:
    return tokens.chunks() if isinstance(tokens, TokenStream) else [np.asarray(tokens)]


def unigram_loss(train: Any, val: Any, vocab_size: int) -> float:
    """Cross-entropy (nats per token) on `val` of always predicting the token
    frequencies of `train`: the loss to beat. Add-one smoothing gives tokens
    unseen in train a finite cost. Both are counted a piece at a time."""
    counts = sum(np.bincount(c, minlength=vocab_size) for c in _chunks(train)).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    val_counts = sum(np.bincount(c, minlength=vocab_size) for c in _chunks(val))
    return float(-(val_counts * log_p).sum() / len(val))
