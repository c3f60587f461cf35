"""The Tokenizer: train, encode, decode, save and load a byte-level BPE.

Its encoding and decoding methods are tiktoken's `Encoding` API, same names
and same rules (`encode(text, disallowed_special=())`, `eot_token`,
`n_vocab`, ...), so code written for tiktoken runs on it unchanged; the
machinery that makes encoding fast (caches, worker processes) is in
`bpe.encode`.
"""

from __future__ import annotations

import os
import warnings
from array import array
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence, Set
from functools import cached_property, partial
from pathlib import Path
from typing import Literal, Union

import numpy as np
from tqdm import tqdm

from . import files
from .encode import PieceEncoder, TextEncoder, encode_in_processes
from .gpt2 import read_gpt2_files
from .hf import HFSpec, is_hf_file, read_hf, write_hf
from .pretokenize import (
    CHUNKS,
    CUTTABLE_PATTERNS,
    GPT2_PATTERN,
    count_pretokens,
    iter_texts,
    pretokenizer,
    resolve_pattern,
    special_regex,
    split_pretokenizer,
    unicode_version,
)
from .ranks import TIKTOKEN_ENCODINGS, merges_of_ranks, read_tiktoken_file
from .train import learn_merges
from .unstable import completions

# bytes that never occur in UTF-8 text: a vocabulary may lack them without losing anything
_NOT_IN_UTF8 = frozenset([0xC0, 0xC1, *range(0xF5, 0x100)])

# "none_raise" (tiktoken's default: allowed_special=set()), "none" (tiktoken's
# disallowed_special=()), "all", or a set of names.
AllowedSpecial = Union[Literal["none_raise", "none", "all"], Set[str]]
DisallowedSpecial = Union[Literal["all"], Collection[str]]
Corpus = Union[str, os.PathLike, Iterable[str]]
SpecialTokens = Union[Iterable[str], Mapping[str, int]]


class SpecialTokenError(ValueError):
    """`encode` met a special token that `allowed_special` does not allow."""

    def __init__(self, token: str, index: int) -> None:
        self.token, self.index = token, index
        super().__init__(
            f"text contains the special token {token!r} at index {index}; pass allowed_special={{{token!r}}} "
            f"or 'all' to encode it as a special token, or disallowed_special=() (or allowed_special='none') "
            f"to encode it as plain text"
        )


class TokenIdError(KeyError, ValueError):
    """A token id the tokenizer does not have: a KeyError as in tiktoken, and a ValueError as before."""

    def __str__(self) -> str:
        return str(self.args[0])


class Tokenizer:
    """A byte-level BPE tokenizer with tiktoken's encoding semantics and `Encoding` API.

    Ids 0-255 are single bytes, id 256 + i is made by merge i, and special
    tokens come last. Build one with `train`, `load` or `from_gpt2`; take any
    tiktoken encoding with `from_tiktoken` or `load_tiktoken`; or read a
    Hugging Face tokenizer.json with `from_hf`, which keeps that file's ids
    and its rule for merging. A tokenizer pickles (its caches are rebuilt,
    not carried), so it crosses process boundaries; no file is ever unpickled.
    """

    def __init__(
        self,
        merges: Sequence[tuple[int, int]] = (),
        pattern: str = "gpt2",
        special_tokens: SpecialTokens = (),
        byte_order: Sequence[int] | None = None,
        name: str = "bpe",
    ) -> None:
        """`byte_order[i]` is the byte that id i stands for (default: byte i is id i).

        `special_tokens` are names, given the ids after the merges in order, or
        a dict from name to id (any id after the merges, as tiktoken's are).
        """
        pattern = resolve_pattern(pattern)
        self._merges = [(int(left), int(right)) for left, right in merges]
        self._byte_order = list(byte_order) if byte_order is not None else None
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
        self._setup(ranks, pattern, _special_ids(special_tokens, len(vocab)), name)

    def _setup(
        self, ranks: dict[bytes, int], pattern: str, special_tokens: dict[str, int], name: str, hf: HFSpec | None = None
    ) -> None:
        if not all(isinstance(token, str) and token for token in special_tokens):
            raise ValueError(f"special tokens must be non-empty strings, got {list(special_tokens)!r}")
        # a vocabulary without a byte would drop it from every text (`tokenizers` does so without a word).
        # Bytes that UTF-8 never uses (0xc0, 0xc1, 0xf5-0xff) cannot be lost. A released model's file
        # (hf) that lacks others, as SmolLM2's lacks six control characters, loads with a warning naming
        # them, since its ids must stay those of its own tokenizer; a tokenizer of ours is refused.
        missing = [b for b in range(256) if bytes([b]) not in ranks and b not in _NOT_IN_UTF8]
        if missing:
            listed = ", ".join(f"0x{b:02x}" for b in missing[:8]) + (f" (and {len(missing) - 8} more)" if len(missing) > 8 else "")
            if hf is None:
                raise ValueError(
                    f"the vocabulary has no token for byte {listed}: every text containing it would "
                    f"lose it, as a byte-level BPE needs each of the 256 bytes as a token"
                )
            warnings.warn(f"tokenizer {name!r} has no token for byte {listed}: a text holding one loses it when "
                          "encoded, as in the model's own tokenizer (`tokenizers`)", stacklevel=3)
        self.name: str = name
        self.pattern: str = pattern
        self.special_tokens: dict[str, int] = special_tokens
        # the Unicode version of the `regex` this tokenizer was trained under, where known (see `load`)
        self.unicode_version: str | None = None
        self._ranks = ranks
        self._hf = hf
        self._decoder = {i: token for token, i in ranks.items()}
        self._decoder.update((i, name.encode("utf-8")) for name, i in special_tokens.items())
        self._max_token_value = max(self._decoder)  # a property read per id in loops over the vocabulary
        self._special_names = frozenset(special_tokens)
        self._special_ids = frozenset(special_tokens.values())
        self._build()

    def _build(self) -> None:
        """Make what encodes text from the fields above: all that pickling leaves out."""
        hf = self._hf
        if hf is None:
            pieces, pretokenize, normalizer = PieceEncoder(self._ranks), pretokenizer(self.pattern), None
        else:
            # a merge listed twice takes its later rank, as in `tokenizers`
            merge_ranks = {pair: rank for rank, pair in enumerate(hf.merges)}
            pieces = PieceEncoder(hf.vocab, merge_ranks, whole_pieces=hf.ignore_merges)
            pretokenize = (split_pretokenizer if hf.split_regex else pretokenizer)(hf.pattern)
            normalizer = hf.normalizer
        cuttable = self.pattern in CUTTABLE_PATTERNS and pretokenize is pretokenizer(self.pattern)
        self._text = TextEncoder(pieces, pretokenize, CHUNKS.findall if cuttable else None, normalizer)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_text"]  # its cache is only speed, and its functions do not pickle
        state.pop("_sorted_token_bytes", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build()

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
        "cl100k", "o200k" or a regex. Each merge joins the most frequent
        adjacent pair; ties go to the smallest (left id, right id). If the
        corpus runs out of pairs first, training stops early with a warning.
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
        tok = cls(merges, pattern, names)
        tok.unicode_version = unicode_version()
        return tok

    @classmethod
    def from_gpt2(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike) -> Tokenizer:
        """GPT-2's tokenizer from its released files; gives GPT-2's exact ids."""
        byte_order, merges, specials = read_gpt2_files(encoder_json, vocab_bpe)
        return cls(merges, GPT2_PATTERN, specials, byte_order, name="gpt2")

    @classmethod
    def from_tiktoken(
        cls,
        mergeable_ranks: Mapping[bytes, int],
        pattern: str,
        special_tokens: Mapping[str, int] | None = None,
        name: str = "tiktoken",
    ) -> Tokenizer:
        """The tokenizer of `tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=..., special_tokens=...)`.

        `pattern` is "gpt2", "cl100k", "o200k" or a regex; special tokens keep
        the ids given (cl100k's <|endoftext|> is 100257). The ranks must be a
        byte-level BPE (see `bpe.ranks`), else ValueError names the first
        token or rank at fault.
        """
        byte_order, merges = merges_of_ranks(mergeable_ranks)
        return cls(merges, pattern, dict(special_tokens or {}), byte_order, name)

    @classmethod
    def load_tiktoken(
        cls,
        path: str | os.PathLike,
        pattern: str | None = None,
        special_tokens: Mapping[str, int] | None = None,
        name: str | None = None,
    ) -> Tokenizer:
        """A tokenizer from a `.tiktoken` rank file (one base64 token and its rank per line).

        For tiktoken's own files (cl100k_base.tiktoken, o200k_base.tiktoken,
        r50k_base, p50k_base) the pattern and special tokens default to
        tiktoken's for that name; for any other file, pass `pattern`
        ("cl100k", "o200k", "gpt2" or a regex) and `special_tokens`.
        """
        stem = Path(path).stem
        known_pattern, known_specials = TIKTOKEN_ENCODINGS.get(stem, (None, {}))
        if pattern is None and known_pattern is None:
            raise ValueError(
                f"{path}: pass pattern= ('cl100k', 'o200k', 'gpt2' or a regex): only tiktoken's own files "
                f"({', '.join(name + '.tiktoken' for name in TIKTOKEN_ENCODINGS)}) have a known pattern"
            )
        ranks = read_tiktoken_file(path)
        specials = known_specials if special_tokens is None else special_tokens
        try:
            return cls.from_tiktoken(ranks, pattern or known_pattern, specials, name or stem)
        except ValueError as exc:
            raise files.TokenizerFileError(f"{path}: {exc}") from None

    @classmethod
    def from_hf(cls, path: str | os.PathLike) -> Tokenizer:
        """A byte-level BPE tokenizer from a Hugging Face `tokenizer.json` (GPT-2, Llama 3, Qwen2/Qwen3).

        `encode(text, allowed_special="all")` then gives the ids of
        `tokenizers`' `encode(text, add_special_tokens=False)`: its added
        tokens are this tokenizer's special tokens, and encoding follows the
        file's merges, ranked by their order (see `bpe.encode`), not by the
        ids of the tokens they make. Features that would change the ids and
        are not supported raise `TokenizerFileError` naming them (see `bpe.hf`),
        as does a vocabulary without a token for each of the 256 bytes.
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
        tok._merges = [(spec.vocab[left], spec.vocab[right]) for left, right in spec.merges]
        tok._byte_order = None
        try:
            tok._setup(dict(spec.vocab), spec.pattern, dict(spec.added_tokens), Path(path).stem, spec)
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
        if sorted(self.special_tokens.values()) != list(range(len(ranks), len(ranks) + len(self.special_tokens))):
            raise ValueError(
                "tokenizer.json gives special tokens the ids right after the vocabulary, in order; this tokenizer's "
                f"leave gaps ({self.special_tokens}), so save it with save() instead"
            )
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

        Raises `TokenizerFileError` on anything else. Warns when the file was
        trained under another Unicode version than this `regex` knows: a
        character assigned in between pre-tokenizes differently, so its ids may differ.
        """
        try:
            spec = files.read(path)
        except files.TokenizerFileError:
            if not is_hf_file(path):
                raise
            return cls.from_hf(path)
        try:
            tok = cls(spec.merges, spec.pattern, spec.special_tokens, spec.byte_order, spec.name)
        except (TypeError, ValueError) as exc:    # merges, byte order: the checks of __init__
            raise files.TokenizerFileError(f"{path}: {exc}") from None
        tok.unicode_version = spec.unicode_version
        if spec.unicode_version is not None and spec.unicode_version != unicode_version():
            warnings.warn(
                f"{path} was trained under Unicode {spec.unicode_version}, but this `regex` has Unicode "
                f"{unicode_version()}: text with characters assigned in between pre-tokenizes differently, "
                f"so its ids may differ from the ones the tokenizer was trained and used with",
                stacklevel=2,
            )
        return tok

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer to `path` atomically, in a file `load` reads back to the same
        ids: our format (see `bpe.files`), or, for a tokenizer read by `from_hf` (whose
        merges and normalizer our format cannot hold), a Hugging Face tokenizer.json."""
        if self._hf is not None:
            self.save_hf(path)
            return
        spec = files.TokenizerSpec(
            self._merges, self.pattern, dict(self.special_tokens), self._byte_order, self.name, self.unicode_version
        )
        files.write(path, spec)

    # ------------------------------------------------------------------ queries

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (special tokens included); tiktoken's `n_vocab`."""
        return self._max_token_value + 1

    n_vocab = vocab_size

    @property
    def max_token_value(self) -> int:
        """The largest id, special tokens included."""
        return self._max_token_value

    @property
    def eot_token(self) -> int:
        """The id of <|endoftext|> (KeyError if this tokenizer has none, as in tiktoken)."""
        return self.special_tokens["<|endoftext|>"]

    @property
    def special_tokens_set(self) -> set[str]:
        """The names of the special tokens."""
        return set(self.special_tokens)

    def is_special_token(self, token: int) -> bool:
        """Whether id `token` is a special token."""
        return token in self._special_ids

    @property
    def merges(self) -> list[tuple[int, int]]:
        """The merges in order, as (left id, right id): for ours, merge i makes id 256 + i."""
        return list(self._merges)

    def mergeable_ranks(self) -> dict[bytes, int]:
        """Token bytes -> id for every non-special token, as `tiktoken.Encoding` takes them."""
        return dict(self._ranks)

    def token_byte_values(self) -> list[bytes]:
        """The bytes of every non-special token, sorted (as tiktoken's are)."""
        return list(self._sorted_token_bytes)

    # ------------------------------------------------------------------ encoding

    def encode(
        self, text: str, allowed_special: AllowedSpecial = "none_raise", disallowed_special: DisallowedSpecial = "all"
    ) -> list[int]:
        """Token ids for `text`, exactly as tiktoken's `Encoding.encode` gives them.

        Special tokens follow tiktoken's rules: those in `allowed_special`
        ("all" or a set; names the tokenizer lacks are ignored) become their
        ids, and finding one in `disallowed_special` ("all": every special
        token not allowed; or a collection of strings) raises
        SpecialTokenError, a ValueError. `disallowed_special=()` encodes
        them as plain text, as does our `allowed_special="none"`. Surrogates
        are read as tiktoken reads them (see `bpe.encode.TextEncoder.encode`).
        """
        _check_text(text)
        allowed, disallowed = self._special_rules(allowed_special, disallowed_special)
        if disallowed and (found := special_regex(disallowed).search(text)):
            raise SpecialTokenError(found.group(), found.start())
        if not allowed:
            return self._text.encode(text)
        ids: list[int] = []
        start = 0
        for found in special_regex(allowed).finditer(text):
            ids += self._text.encode(text[start : found.start()])
            ids.append(self.special_tokens[found.group()])
            start = found.end()
        ids += self._text.encode(text[start:])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids for `text`, treating special tokens as plain text."""
        _check_text(text)
        return self._text.encode(text)

    def encode_to_numpy(
        self, text: str, *, allowed_special: AllowedSpecial = "none_raise", disallowed_special: DisallowedSpecial = "all"
    ) -> np.ndarray:
        """`encode` as a uint32 array."""
        # through array("I") (C's unsigned int, 32 bits wherever numpy runs): 3x quicker than np.array(list)
        return np.frombuffer(array("I", self.encode(text, allowed_special, disallowed_special)), dtype=np.uint32)

    def encode_with_unstable(
        self, text: str, *, allowed_special: AllowedSpecial = "none_raise", disallowed_special: DisallowedSpecial = "all"
    ) -> tuple[list[int], list[list[int]]]:
        """(the stable ids of `text`, the id sequences that may complete it), as tiktoken's (an unstable API there too).

        The last pre-token's ids may change when text is appended, so they are
        held back: the stable ids cover a prefix of the text, and each
        completion, appended to them, decodes to bytes that start with the
        text's (see `bpe.unstable`). Following tiktoken, a trailing run of
        whitespace tokens counts as part of the last pre-token (cl100k's
        `\\s*[\\r\\n]+` can join them).
        """
        ids = self.encode(text, allowed_special, disallowed_special)
        unstable = self._last_piece_token_count(text, allowed_special, disallowed_special)
        all_space = lambda token: self._decoder[token].strip(b" \n\t") == b""  # noqa: E731
        if unstable and all_space(ids[-unstable]):
            while unstable < len(ids) and all_space(ids[-unstable - 1]):
                unstable += 1
        if not unstable:
            return ids, []
        tail = self.decode_bytes(ids[-unstable:])
        return ids[:-unstable], completions(tail, self._text, self._sorted_token_bytes, self._ranks, self._decoder)

    def _last_piece_token_count(self, text: str, allowed_special: AllowedSpecial, disallowed_special: DisallowedSpecial) -> int:
        """How many of the last ids `encode` gives `text` come from its last pre-token (0 after a special token)."""
        allowed, _ = self._special_rules(allowed_special, disallowed_special)
        start = 0
        if allowed:
            for found in special_regex(allowed).finditer(text):
                start = found.end()
        if start == len(text):
            return 0
        tail = text[start:].encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        pieces = self._text.pretokenize(tail)
        return len(self._text.pieces.encode(pieces[-1].encode("utf-8"))) if pieces else 0

    @cached_property
    def _sorted_token_bytes(self) -> list[bytes]:
        return sorted(self._ranks)

    def encode_single_token(self, text_or_bytes: str | bytes) -> int:
        """The id of the one token whose text or bytes this is, special tokens included (KeyError if none)."""
        key = text_or_bytes.encode("utf-8") if isinstance(text_or_bytes, str) else bytes(text_or_bytes)
        token = self._ranks.get(key)
        if token is None:
            token = self.special_tokens.get(key.decode("utf-8", errors="replace"))
        if token is None:
            raise KeyError(text_or_bytes)
        return token

    def encode_batch(
        self,
        texts: Iterable[str],
        allowed_special: AllowedSpecial = "none_raise",
        workers: int | None = None,
        *,
        num_threads: int = 8,
        disallowed_special: DisallowedSpecial = "all",
    ) -> list[list[int]]:
        """`encode` for each text, in order.

        Large batches are split over processes (a forked copy of this
        tokenizer each, see `bpe.encode.encode_in_processes`): `workers` of
        them, or as tiktoken's `num_threads` says, at most one per core.
        """
        texts = list(texts)
        for text in texts:
            _check_text(text)
        self._special_rules(allowed_special, disallowed_special)  # fail here, not inside a worker
        encode = partial(self.encode, allowed_special=allowed_special, disallowed_special=disallowed_special)
        return encode_in_processes(encode, texts, workers or min(num_threads, os.cpu_count() or 1))

    def encode_ordinary_batch(self, texts: Iterable[str], *, num_threads: int = 8) -> list[list[int]]:
        """`encode_ordinary` for each text, in order, split over processes as `encode_batch` is."""
        texts = list(texts)
        for text in texts:
            _check_text(text)
        return encode_in_processes(self._text.encode, texts, min(num_threads, os.cpu_count() or 1))

    def _special_rules(
        self, allowed_special: AllowedSpecial, disallowed_special: DisallowedSpecial
    ) -> tuple[frozenset[str], frozenset[str]]:
        """(the special tokens to encode as such, the strings to refuse), by tiktoken's rules."""
        for value in (allowed_special, disallowed_special):
            if isinstance(value, str) and value not in ("all", "none", "none_raise"):
                raise ValueError(f"allowed_special and disallowed_special take 'all' or a set of names, got {value!r}")
        if allowed_special == "none":  # ours: special tokens are plain text, unless disallowed_special names some
            return frozenset(), frozenset() if disallowed_special == "all" else frozenset(disallowed_special)
        if allowed_special == "all":
            allowed = self._special_names
        elif allowed_special == "none_raise":
            allowed = frozenset()
        else:
            allowed = frozenset(allowed_special) & self._special_names  # tiktoken ignores names it does not have
        if disallowed_special == "all":
            return allowed, self._special_names - allowed
        return allowed, frozenset(disallowed_special)

    # ------------------------------------------------------------------ decoding

    def decode_bytes(self, tokens: Iterable[int]) -> bytes:
        """The raw bytes behind `tokens` (special tokens as their UTF-8 text)."""
        try:
            return b"".join(map(self._decoder.__getitem__, tokens))
        except KeyError as exc:
            raise self._unknown(exc.args[0]) from None

    def decode(self, tokens: Iterable[int], errors: str = "replace") -> str:
        """Text for `tokens`; bytes that are not valid UTF-8 become U+FFFD by default."""
        return self.decode_bytes(tokens).decode("utf-8", errors=errors)

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of one token, special tokens included."""
        try:
            return self._decoder[token]
        except KeyError:
            raise self._unknown(token) from None

    def decode_tokens_bytes(self, tokens: Iterable[int]) -> list[bytes]:
        """The bytes of each token, one entry per token."""
        return [self.decode_single_token_bytes(token) for token in tokens]

    def decode_with_offsets(self, tokens: Sequence[int]) -> tuple[str, list[int]]:
        """The text of `tokens` (strict UTF-8) and, per token, the index of its first character in it.

        A token that starts inside a character (a UTF-8 continuation byte) is
        given that character's index, as in tiktoken.
        """
        parts = self.decode_tokens_bytes(tokens)
        offsets, length = [], 0
        for part in parts:
            starts_inside = 0x80 <= part[0] < 0xC0
            offsets.append(max(0, length - starts_inside))
            length += sum(not 0x80 <= byte < 0xC0 for byte in part)  # characters begin at non-continuation bytes
        return b"".join(parts).decode("utf-8", errors="strict"), offsets

    def decode_batch(self, batch: Iterable[Sequence[int]], *, errors: str = "replace", num_threads: int = 8) -> list[str]:
        """`decode` for each list of ids (`num_threads` is accepted for tiktoken's sake: decoding is quick)."""
        return [self.decode(tokens, errors) for tokens in batch]

    def decode_bytes_batch(self, batch: Iterable[Sequence[int]], *, num_threads: int = 8) -> list[bytes]:
        """`decode_bytes` for each list of ids."""
        return [self.decode_bytes(tokens) for tokens in batch]

    def _unknown(self, token: object) -> TokenIdError:
        return TokenIdError(f"token id {token!r} is out of range: this tokenizer has ids 0 to {self.max_token_value}"
                            + ("" if len(self._decoder) == self.n_vocab else " (with gaps)"))

    def __repr__(self) -> str:
        return (f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, merges={len(self._merges)}, "
                f"special_tokens={self.special_tokens})")


def _special_ids(special_tokens: SpecialTokens, first_id: int) -> dict[str, int]:
    """Name -> id: names take the ids from `first_id` on, in order; a dict keeps its ids, which must be free."""
    if isinstance(special_tokens, Mapping):
        specials = dict(special_tokens)
        if taken := [name for name, i in specials.items() if not (isinstance(i, int) and i >= first_id)]:
            raise ValueError(
                f"special token {taken[0]!r} has id {specials[taken[0]]!r}; ids 0-{first_id - 1} are the merges' tokens"
            )
        if len(set(specials.values())) != len(specials):
            raise ValueError(f"two special tokens share an id in {specials!r}")
        return specials
    names = list(special_tokens)
    if len(set(names)) != len(names):
        raise ValueError(f"special tokens must be distinct, got {names!r}")
    return {name: first_id + i for i, name in enumerate(names)}


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        hint = ": decode the bytes first, e.g. data.decode('utf-8')" if isinstance(text, (bytes, bytearray)) else ""
        raise TypeError(f"expected text as a str, got {type(text).__name__}{hint}")


def _utf8(piece: str) -> bytes:
    try:
        return piece.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"the corpus contains a lone surrogate {piece[exc.start]!r} (in {piece!r}), which has no UTF-8 encoding; "
            f"fix the text first, e.g. with text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')"
        ) from None
