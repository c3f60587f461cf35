"""The Tokenizer: train, encode, decode, save and load a byte-level BPE."""

from __future__ import annotations

import multiprocessing
import os
import unicodedata
import warnings
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Sequence, Set
from itertools import accumulate, chain
from typing import Literal, Union

from tqdm import tqdm

from . import files
from .encode import PieceEncoder
from .gpt2 import read_gpt2_files
from .hf import HFSpec, is_hf_file, read_hf, write_hf
from .pretokenize import (
    CUTTABLE_PATTERNS,
    GPT2_PATTERN,
    CHUNKS,
    count_pretokens,
    iter_texts,
    pretokenizer,
    resolve_pattern,
    special_regex,
    split_pretokenizer,
)
from .train import learn_merges

AllowedSpecial = Union[Literal["none_raise", "none", "all"], Set[str]]
Corpus = Union[str, os.PathLike, Iterable[str]]

# Entries each cache keeps before it is emptied (about 40 MB).
CACHE_LIMIT = 1 << 18
# Chunks and pre-tokens longer than this (in characters) are not cached.
CACHE_MAX_CHARS = 128
# The chunks in this many first characters of a text decide how to encode it.
SAMPLE_CHARS = 1024
# encode_batch forks workers only when there is at least this much text.
PARALLEL_MIN_CHARS = 1 << 20


class SpecialTokenError(ValueError):
    """`encode` met a special token that `allowed_special` does not allow."""

    def __init__(self, token: str, index: int) -> None:
        self.token, self.index = token, index
        super().__init__(
            f"text contains the special token {token!r} at index {index}; pass allowed_special={{{token!r}}} "
            f"or 'all' to encode it as a special token, or allowed_special='none' to encode it as plain text"
        )


class Tokenizer:
    """A byte-level BPE tokenizer with tiktoken's encoding semantics.

    Ids 0-255 are single bytes, id 256 + i is made by merge i, and special
    tokens come last. Build one with `train`, `load` or `from_gpt2`; or read
    a Hugging Face tokenizer.json with `from_hf`, which keeps that file's ids
    and its rule for merging.
    """

    def __init__(
        self,
        merges: Sequence[tuple[int, int]] = (),
        pattern: str = "gpt2",
        special_tokens: Iterable[str] = (),
        byte_order: Sequence[int] | None = None,
    ) -> None:
        """`byte_order[i]` is the byte that id i stands for (default: byte i is id i)."""
        pattern = resolve_pattern(pattern)
        self._merges = [(int(left), int(right)) for left, right in merges]
        self._byte_order = list(byte_order) if byte_order is not None else None
        self._hf: HFSpec | None = None
        if self._byte_order is not None and sorted(self._byte_order) != list(range(256)):
            raise ValueError("byte_order must list each of the 256 byte values once")
        vocab = [bytes([b]) for b in (self._byte_order or range(256))]
        for left, right in self._merges:
            if not (0 <= left < len(vocab) and 0 <= right < len(vocab)):
                raise ValueError(f"merge ({left}, {right}) for id {len(vocab)} refers to an id that does not exist yet")
            vocab.append(vocab[left] + vocab[right])
        ranks = {token: i for i, token in enumerate(vocab)}
        if len(ranks) != len(vocab):
            raise ValueError("two merges make the same bytes; token bytes must be unique")
        names = list(special_tokens)
        specials = {name: len(vocab) + i for i, name in enumerate(names)}
        if len(specials) != len(names):
            raise ValueError(f"special tokens must be distinct, got {names!r}")
        self._setup(ranks, pattern, specials, PieceEncoder(ranks), pretokenizer(pattern))

    def _setup(
        self,
        ranks: dict[bytes, int],
        pattern: str,
        special_tokens: dict[str, int],
        encoder: PieceEncoder,
        pretokenize: Callable[[str], list[str]],
        normalizer: str | None = None,
    ) -> None:
        if not all(isinstance(name, str) and name for name in special_tokens):
            raise ValueError(f"special tokens must be non-empty strings, got {list(special_tokens)!r}")
        self.pattern: str = pattern
        self.special_tokens: dict[str, int] = special_tokens
        self._special_names = frozenset(special_tokens)
        self._ranks = ranks
        self._decoder = {i: token for token, i in ranks.items()}
        self._decoder.update((i, name.encode("utf-8")) for name, i in special_tokens.items())
        self._encoder = encoder
        self._pretokenize = pretokenize
        self._normalizer = normalizer
        self._cache: dict[str, tuple[int, ...]] = {}
        self._cuttable = pattern in CUTTABLE_PATTERNS and pretokenize is pretokenizer(pattern)

    # ------------------------------------------------------------------ building

    @classmethod
    def train(
        cls,
        corpus: Corpus,
        vocab_size: int,
        special_tokens: Iterable[str] = (),
        pattern: str = "gpt2",
        progress: bool = True,
    ) -> Tokenizer:
        """Learn a tokenizer of `vocab_size` ids (bytes + merges + special tokens).

        `corpus` is a `str`, a path (`os.PathLike`, read in chunks so it may be
        larger than memory) or an iterable of documents. `pattern` is "gpt2",
        "cl100k" or a regex. Each merge joins the most frequent adjacent pair;
        ties go to the smallest (left id, right id). If the corpus runs out of
        pairs first, training stops early with a warning.
        """
        names = list(special_tokens)
        n_merges = vocab_size - 256 - len(names)
        if n_merges < 0:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: it must be at least 256 bytes + {len(names)} special tokens"
            )
        pattern = resolve_pattern(pattern)
        specials = frozenset(names)
        counts: Counter[str] = Counter()
        chunks = tqdm(iter_texts(corpus, specials), desc="counting pre-tokens", unit=" chunks", delay=2.0, disable=not progress)
        for chunk in chunks:
            counts.update(count_pretokens(chunk, pattern, specials))
        word_counts = {_utf8(word): n for word, n in counts.items()}
        del counts
        merges = learn_merges(word_counts, n_merges, progress)
        if len(merges) < n_merges:
            warnings.warn(
                f"the corpus is too small for vocab_size={vocab_size}: only {len(merges)} merges were possible "
                f"(of {n_merges}), so the vocabulary has {256 + len(merges) + len(names)} ids",
                stacklevel=2,
            )
        return cls(merges, pattern, names)

    @classmethod
    def from_gpt2(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike) -> Tokenizer:
        """GPT-2's tokenizer from its released files; gives GPT-2's exact ids."""
        byte_order, merges, specials = read_gpt2_files(encoder_json, vocab_bpe)
        return cls(merges, GPT2_PATTERN, sorted(specials, key=specials.get), byte_order)

    @classmethod
    def from_hf(cls, path: str | os.PathLike) -> Tokenizer:
        """A byte-level BPE tokenizer from a Hugging Face `tokenizer.json` (GPT-2, Llama 3, Qwen2/Qwen3).

        `encode(text, allowed_special="all")` then gives the ids of
        `tokenizers`' `encode(text, add_special_tokens=False)`: its added
        tokens are this tokenizer's special tokens, and encoding follows the
        file's merges, ranked by their order (see `bpe.encode`), not by the
        ids of the tokens they make. Features that would change the ids and
        are not supported raise `TokenizerFileError` naming them (see `bpe.hf`).
        """
        return cls._from_hf_spec(read_hf(path), path)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike) -> Tokenizer:
        """The byte-level BPE tokenizer of a GGUF file (`tokenizer.ggml.*`, see `bpe.gguf`), with the
        ids of the same model's tokenizer.json; its control tokens are the special tokens."""
        from .gguf import read_gguf_tokenizer   # the gguf package is an optional extra

        return cls._from_hf_spec(read_gguf_tokenizer(path), path)

    @classmethod
    def _from_hf_spec(cls, spec: HFSpec, path: str | os.PathLike) -> Tokenizer:
        tok = cls.__new__(cls)
        tok._hf = spec
        tok._merges = [(spec.vocab[left], spec.vocab[right]) for left, right in spec.merges]
        tok._byte_order = None
        # a merge listed twice takes its later rank, as in `tokenizers`
        merge_ranks = {pair: rank for rank, pair in enumerate(spec.merges)}
        encoder = PieceEncoder(spec.vocab, merge_ranks, whole_pieces=spec.ignore_merges)
        pretokenize = (split_pretokenizer if spec.split_regex else pretokenizer)(spec.pattern)
        try:
            tok._setup(dict(spec.vocab), spec.pattern, dict(spec.added_tokens), encoder, pretokenize, spec.normalizer)
        except ValueError as exc:
            raise files.TokenizerFileError(f"{path}: {exc}") from None
        return tok

    def save_hf(self, path: str | os.PathLike) -> None:
        """Write a Hugging Face `tokenizer.json` that `tokenizers` and `from_hf` read to the same ids.

        A tokenizer read by `from_hf` is written back as it was read. Ours
        follow tiktoken's rule: any two tokens whose bytes join into a token
        merge, ranked by that token's id. In the file this becomes one merge
        per way of splitting each token into two tokens, in the order of the
        tokens they make, with `ignore_merges` (a pre-token that is a token
        stays whole). That gives our ids but in one corner: where two
        different splits of one token overlap in a pre-token ("ab a ba" for
        "aba"), tiktoken merges the leftmost and `tokenizers` the one listed
        first. A custom pattern is written as it is; `tokenizers` reads it
        with Oniguruma, see `bpe.hf`.
        """
        if self._hf is not None:
            write_hf(path, self._hf)
            return
        ranks = self._ranks
        splits = [
            (token[:cut], token[cut:])
            for token in ranks
            for cut in range(1, len(token))
            if token[:cut] in ranks and token[cut:] in ranks
        ]
        splits.sort(key=lambda pair: (ranks[pair[0] + pair[1]], ranks[pair[0]]))
        write_hf(path, HFSpec(dict(ranks), splits, dict(self.special_tokens), self.pattern, False, True, None))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a file written by `save`, or a Hugging Face `tokenizer.json` (see `from_hf`).

        Raises `TokenizerFileError` on anything else.
        """
        try:
            spec = files.read(path)
        except files.TokenizerFileError:
            if not is_hf_file(path):
                raise
            return cls.from_hf(path)
        try:
            return cls(spec.merges, spec.pattern, sorted(spec.special_tokens, key=spec.special_tokens.get), spec.byte_order)
        except (TypeError, ValueError) as exc:    # merges, byte order: the checks of __init__
            raise files.TokenizerFileError(f"{path}: {exc}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer to `path` atomically, in a file `load` reads back to the same
        ids: our format (see `bpe.files`), or, for a tokenizer read by `from_hf` (whose
        merges and normalizer our format cannot hold), a Hugging Face tokenizer.json."""
        if self._hf is not None:
            self.save_hf(path)
            return
        files.write(path, files.TokenizerSpec(self._merges, self.pattern, dict(self.special_tokens), self._byte_order))

    # ------------------------------------------------------------------ queries

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (special tokens included)."""
        return max(self._decoder) + 1

    @property
    def merges(self) -> list[tuple[int, int]]:
        """The merges in order, as (left id, right id): for ours, merge i makes id 256 + i."""
        return list(self._merges)

    def mergeable_ranks(self) -> dict[bytes, int]:
        """Token bytes -> id for every non-special token, as `tiktoken.Encoding` takes them."""
        return dict(self._ranks)

    # ------------------------------------------------------------------ encoding

    def encode(self, text: str, allowed_special: AllowedSpecial = "none_raise") -> list[int]:
        """Token ids for `text`, exactly as tiktoken would produce them.

        Special tokens in the text: "none_raise" (default) raises ValueError,
        "none" encodes them as ordinary text, "all" or a set of names turns
        those into their special ids (others still raise). A lone surrogate
        in `text` raises ValueError: it has no UTF-8 bytes.
        """
        if allowed_special == "none":
            return self.encode_ordinary(text)
        allowed = self._allowed(allowed_special)
        disallowed = self._special_names - allowed
        if disallowed and (found := special_regex(disallowed).search(text)):
            raise SpecialTokenError(found.group(), found.start())
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for found in special_regex(allowed).finditer(text):
            ids += self.encode_ordinary(text[start : found.start()])
            ids.append(self.special_tokens[found.group()])
            start = found.end()
        ids += self.encode_ordinary(text[start:])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids for `text`, treating special tokens as plain text."""
        if self._normalizer is not None:
            text = unicodedata.normalize(self._normalizer, text)
        chunks = self._cached_chunks(text)
        if chunks is not None:
            return self._encode_mostly_cached(chunks)
        return self._encode_mostly_new(self._pretokenize(text))

    # The cache maps a string to its ids. Its strings are pre-tokens and, for
    # the patterns that allow it (CUTTABLE_PATTERNS), chunks: text between two
    # safe cuts, such as " world!" or " the". Text whose chunks are cached
    # encodes fastest, as there are fewer chunks than pre-tokens and cutting
    # is quicker than pre-tokenizing. Text that is mostly new is best split
    # into pre-tokens at once, since each new chunk would be split again.
    # Long strings stay out of the cache: one huge word must not fill memory.

    def _cached_chunks(self, text: str) -> list[str] | None:
        """`text` cut into chunks if the pattern allows it and most of its first chunks are cached."""
        if not self._cuttable:
            return None
        head = CHUNKS.findall(text, 0, SAMPLE_CHARS)
        if 2 * sum(map(self._cache.__contains__, head)) < len(head):
            return None
        return head if len(text) <= SAMPLE_CHARS else CHUNKS.findall(text)

    def _encode_mostly_new(self, pieces: list[str]) -> list[int]:
        cache = self._cache
        try:
            return list(chain.from_iterable(map(cache.__getitem__, pieces)))
        except KeyError:
            pass
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        new = {piece: self._encode_piece(piece) for piece in set(pieces).difference(cache)}
        cache.update(new)
        ids = list(chain.from_iterable(map(cache.__getitem__, pieces)))
        for piece in new:
            if len(piece) > CACHE_MAX_CHARS:
                del cache[piece]
        return ids

    def _encode_mostly_cached(self, chunks: list[str]) -> list[int]:
        cache = self._cache
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        ids: list[int] = []
        remaining = iter(chunks)
        uncached: dict[str, tuple[int, ...]] = {}
        # Cached chunks are looked up in C; a miss stops the lookups at the
        # chunk that missed, which is encoded, and then they resume after it.
        while True:
            try:
                ids.extend(chain.from_iterable(map(cache.__getitem__, remaining)))
                return ids
            except KeyError as miss:
                chunk = miss.args[0]
            encoded = uncached.get(chunk)
            if encoded is None:
                encoded = self._encode_chunk(chunk)
                (uncached if len(chunk) > CACHE_MAX_CHARS else cache)[chunk] = encoded
            ids += encoded

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        return tuple(self._encoder.encode(_utf8(piece)))

    def _encode_chunk(self, chunk: str) -> tuple[int, ...]:
        cache = self._cache
        ids: list[int] = []
        # A pre-token alone is that one pre-token (for CUTTABLE_PATTERNS), so a
        # chunk and a pre-token with the same text share their cache entry.
        for piece in self._pretokenize(chunk):
            encoded = cache.get(piece)
            if encoded is None:
                encoded = self._encode_piece(piece)
                if len(piece) <= CACHE_MAX_CHARS:
                    cache[piece] = encoded
            ids += encoded
        return tuple(ids)

    def encode_batch(
        self, texts: Iterable[str], allowed_special: AllowedSpecial = "none_raise", workers: int | None = None
    ) -> list[list[int]]:
        """`encode` for each text, in order; large batches are split over `workers` processes (default: all cores)."""
        texts = list(texts)
        workers = workers or os.cpu_count() or 1
        fork_ok = "fork" in multiprocessing.get_all_start_methods()
        workers = min(workers, len(texts))
        if workers < 2 or not fork_ok or sum(map(len, texts)) < PARALLEL_MIN_CHARS:
            return [self.encode(text, allowed_special) for text in texts]
        self._allowed(allowed_special)  # fail here, not inside a worker
        # Shares of about equal length, each a run of whole texts.
        ends = list(accumulate(map(len, texts)))
        bounds = [0, *(bisect_left(ends, ends[-1] * w // workers) for w in range(1, workers)), len(texts)]
        ranges = list(zip(bounds, bounds[1:]))
        # This process encodes the first share while forked workers do the rest.
        # fork lets them inherit this tokenizer (warm cache included) and the
        # texts without pickling; they send back flat arrays of ids, which
        # pickle as raw bytes, with the length of each text's part.
        with multiprocessing.get_context("fork").Pool(workers - 1, _worker_init, (self, texts, allowed_special)) as pool:
            pending = pool.map_async(_worker_encode, ranges[1:], chunksize=1)
            batch = [self.encode(text, allowed_special) for text in texts[: bounds[1]]]
            for flat_ids, lengths in pending.get():
                flat = flat_ids.tolist()
                start = 0
                for n in lengths:
                    batch.append(flat[start : start + n])
                    start += n
        return batch

    def _allowed(self, allowed_special: AllowedSpecial) -> frozenset[str]:
        if allowed_special == "all":
            return self._special_names
        if allowed_special in ("none_raise", "none"):
            return frozenset()
        if isinstance(allowed_special, str):
            raise ValueError(f"allowed_special must be 'none_raise', 'none', 'all' or a set, got {allowed_special!r}")
        allowed = frozenset(allowed_special)
        if unknown := allowed - self._special_names:
            raise ValueError(f"unknown special tokens in allowed_special: {sorted(unknown)!r}")
        return allowed

    # ------------------------------------------------------------------ decoding

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes behind `ids` (special tokens as their UTF-8 text)."""
        try:
            return b"".join(map(self._decoder.__getitem__, ids))
        except KeyError as exc:
            raise ValueError(
                f"token id {exc.args[0]!r} is out of range: this tokenizer has ids 0 to {self.vocab_size - 1}"
            ) from None

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Text for `ids`; bytes that are not valid UTF-8 become U+FFFD by default."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)}, special_tokens={self.special_tokens})"


def _utf8(piece: str) -> bytes:
    try:
        return piece.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"text contains a lone surrogate {piece[exc.start]!r} (in {piece!r}), which has no UTF-8 encoding; "
            f"fix the text first, e.g. with text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')"
        ) from None


_worker_job: tuple[Tokenizer, list[str], AllowedSpecial] | None = None


def _worker_init(tokenizer: Tokenizer, texts: list[str], allowed_special: AllowedSpecial) -> None:
    global _worker_job
    _worker_job = (tokenizer, texts, allowed_special)


def _worker_encode(bounds: tuple[int, int]) -> tuple[array, array]:
    assert _worker_job is not None
    tokenizer, texts, allowed_special = _worker_job
    encoded = [tokenizer.encode(text, allowed_special) for text in texts[bounds[0] : bounds[1]]]
    return array("q", chain.from_iterable(encoded)), array("q", map(len, encoded))
