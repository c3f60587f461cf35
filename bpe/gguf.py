r"""GGUF files (llama.cpp's format): opening one, its metadata, and the tokenizer it holds.

    open_gguf(path)              a `gguf.GGUFReader` (the `gguf` package reads the format)
    metadata(reader, key, kind)  one metadata value, checked to be of `kind`
    read_gguf_tokenizer(path)    the HFSpec (see bpe.hf) of the file's byte-level BPE

A GGUF of a byte-level BPE (`tokenizer.ggml.model` = "gpt2") keeps what
decides the ids under `tokenizer.ggml.*`:

* `tokens`: the token texts, id = position, written in GPT-2's byte-level
  characters as in a tokenizer.json;
* `token_type`: 1 normal, 3 control, 4 user-defined (both cut out of the text
  before anything else: our special tokens), 2 unknown, 5 unused, 6 byte;
* `merges`: "left right" strings, ranked by position;
* `pre`: the name of the pre-tokenizer, which llama.cpp maps to a list of
  regexes in `llama-vocab.cpp`; each regex splits every piece the one
  before it made, and the text between two matches is a piece too.

The names read here, and llama.cpp's regexes for them (Hugging Face's
tokenizer.json of those models says the same in its own terms):

    gpt-2                     GPT-2's regex
    llama-bpe, llama3         Llama 3's (digits in groups of at most three), ignore_merges
    qwen2                     Llama 3's with single digits; Qwen2's tokenizer.json adds NFC
    smollm, starcoder         \\p{N} first (each digit alone), then GPT-2's regex

For smollm the two steps are one regex here (PATTERNS): each digit alone,
and GPT-2's regex with `\s+(?!\S)` widened to `\s+(?![^\s\p{N}])`, since
a digit ends the piece GPT-2's regex sees as the end of the text would
(tests/test_gguf.py checks the one regex against the two steps). Any other
name is an error: guessing would give other ids.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np

from .files import TokenizerFileError
from .hf import HFSpec, bytes_of, is_byte_level, merge_pairs

# Hugging Face's spellings, with the final \s+ that llama.cpp leaves out: it takes exactly the single
# whitespace characters llama.cpp keeps as the text between two matches
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
_SMOLLM = r"\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"

# name -> (pattern, ignore_merges, normalizer)
PATTERNS: dict[str, tuple[str, bool, str | None]] = {
    "gpt-2": (_GPT2, False, None),
    "llama-bpe": (_LLAMA3, True, None),
    "llama3": (_LLAMA3, True, None),
    "qwen2": (_QWEN2, False, "NFC"),
    "smollm": (_SMOLLM, False, None),
    "starcoder": (_SMOLLM, False, None),
}
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4
EXTRA = "pip install 'tinygpt[gguf]'"


def open_gguf(path: str | os.PathLike) -> Any:
    """The file's `gguf.GGUFReader`; a clear error when the package is missing or the file is not a GGUF.
    The reader of the file last opened is kept: the model, its tokenizer and its chat template are
    read from the same file one after the other, and parsing the metadata takes seconds."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ImportError(f"reading GGUF files needs the gguf package: {EXTRA}") from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no GGUF file at {path}")
    stat = os.stat(path)
    return _reader(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=1)
def _reader(path: str, size: int, mtime_ns: int) -> Any:
    """The reader of the file at `path` as it is at this size and time (the cache's key)."""
    import gguf

    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, OSError, KeyError, UnicodeDecodeError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable GGUF file (or a truncated one): {exc}") from None


def metadata(reader: Any, key: str, kind: type | tuple[type, ...] = (int, float, str, bool, list),
             default: Any = ...) -> Any:
    """The value of metadata `key`, which must be of `kind`; `default` when absent (or an error)."""
    field = reader.fields.get(key)
    if field is None:
        if default is ...:
            raise ValueError(f"{reader.data.filename}: the metadata lacks {key}")
        return default
    value = field.contents()
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        # a float32 (as most are) by its shortest spelling: 1e-05, not 9.999999747378752e-06
        value = float(str(np.float32(value))) if field.types[0].name == "FLOAT32" else float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ValueError(f"{reader.data.filename}: metadata {key} is {value!r:.60}, expected {names}")
    return value


def read_gguf_tokenizer(path: str | os.PathLike, reader: Any = None) -> HFSpec:
    """The byte-level BPE of a GGUF file as an HFSpec; TokenizerFileError naming what does not fit."""
    reader = reader if reader is not None else open_gguf(path)
    try:
        return _read(reader)
    except ValueError as exc:
        where = str(reader.data.filename)        # metadata()'s errors name the file already
        raise TokenizerFileError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None


def _read(reader: Any) -> HFSpec:
    model = metadata(reader, "tokenizer.ggml.model", str)
    if model != "gpt2":
        raise ValueError(f"tokenizer.ggml.model is {model!r}: only byte-level BPE ('gpt2') tokenizers are read "
                         "(a 'llama' one is SentencePiece)")
    pre = metadata(reader, "tokenizer.ggml.pre", str, "default")
    if pre not in PATTERNS:
        raise ValueError(f"tokenizer.ggml.pre is {pre!r}, a pre-tokenizer not read here (known: "
                         f"{', '.join(PATTERNS)}): its regexes are in llama.cpp's llama-vocab.cpp")
    pattern, ignore_merges, normalizer = PATTERNS[pre]
    tokens = metadata(reader, "tokenizer.ggml.tokens", list)
    types = metadata(reader, "tokenizer.ggml.token_type", list, [NORMAL] * len(tokens))
    if len(types) != len(tokens):
        raise ValueError(f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    vocab: dict[bytes, int] = {}
    added: dict[str, int] = {}
    for i, (text, kind) in enumerate(zip(tokens, types)):
        if kind in (CONTROL, USER_DEFINED):
            added[text] = i
            # in the vocabulary too when byte-level text, as a tokenizer.json has it (so one written keeps its id)
            if not is_byte_level(text):
                continue
        token = bytes_of(text)
        if token in vocab:
            raise ValueError(f"tokens {vocab[token]} and {i} are the same bytes {token!r}")
        vocab[token] = i
    merges = merge_pairs(metadata(reader, "tokenizer.ggml.merges", list, []), vocab)   # none: bytes only
    return HFSpec(vocab, merges, added, pattern, True, ignore_merges, normalizer)


def special_ids(reader: Any) -> dict[str, int]:
    """bos, eos, unk, pad -> id, for those the file names."""
    ids = {}
    for name, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                      ("pad", "padding_token_id")):
        value = metadata(reader, f"tokenizer.ggml.{key}", int, None)
        if value is not None:
            ids[name] = value
    return ids
