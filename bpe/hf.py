"""Hugging Face `tokenizer.json` files for byte-level BPE (GPT-2, Llama 3, Qwen2/Qwen3).

What decides the ids in such a file, and what `read_hf` keeps:

* the normalizer: none, or NFC (Qwen2);
* the pre-tokenizer: a `Split` regex and/or `ByteLevel`, alone or in a
  `Sequence`; `ByteLevel` with `use_regex` splits with GPT-2's regex, and maps
  each byte to one printable character (GPT-2's table, `bpe.gpt2`);
* the model: `vocab` (token text -> id), `merges` ("left right" strings or
  [left, right] pairs, ranked by their position) and `ignore_merges`;
* `added_tokens`, cut out of the text before anything else, with their ids.

Anything else that would change the ids (another normalizer or model,
`byte_fallback`, a word prefix or suffix, truncation, ...) is an error naming
it. Post-processors (such as Llama 3's template that adds <|begin_of_text|>)
and decoders are ignored: the ids are those of
`tokenizers.Tokenizer.encode(text, add_special_tokens=False)`.

A `Split` regex is run by Oniguruma in `tokenizers`: text between two matches
is a pre-token too, and `$` or `^` match at every line end or start. Read
here, such a pattern keeps those meanings (see `Tokenizer.from_hf`), except
for the spellings of the built-in patterns, which read as those.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import regex

from .files import TokenizerFileError, write_atomically
from .gpt2 import byte_to_char
from .pretokenize import CL100K_PATTERN, GPT2_PATTERN

# GPT-2's regex as `tokenizers` spells it (ByteLevel's own); it matches what GPT2_PATTERN does.
HF_GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# How a tokenizer.json spells the built-in patterns. Oniguruma reads `$` as the
# end of a line and `{1,3}+` as "one or more groups of 1-3", so the spelling
# for it drops the possessive quantifiers (they change no match here) and says
# "the end of the text" as "followed by no character at all".
HF_SPELLINGS = {
    GPT2_PATTERN: HF_GPT2_REGEX,
    CL100K_PATTERN: (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
        r"""|\s+(?![\s\S])|\s*[\r\n]|\s+(?!\S)|\s"""
    ),
}
_BUILT_IN = {spelling: pattern for pattern, spelling in HF_SPELLINGS.items()}

_TO_BYTE = {c: b for b, c in byte_to_char().items()}
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}


@dataclass(frozen=True)
class HFSpec:
    """What decides the ids of a byte-level BPE tokenizer.json."""

    vocab: dict[bytes, int]  # the model's tokens
    merges: list[tuple[bytes, bytes]]  # ranked by position
    added_tokens: dict[str, int]
    pattern: str  # GPT2_PATTERN or CL100K_PATTERN for their spellings, else the Split regex
    split_regex: bool  # `pattern` is a Split regex with Oniguruma's meanings (see the module doc)
    ignore_merges: bool  # a pre-token that is a token is that token, unmerged
    normalizer: str | None  # "NFC" or None


def is_hf_file(path: str | os.PathLike) -> bool:
    """Whether `path` holds a JSON object with a 'model' object, as tokenizer.json files do."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("model"), dict)


def read_hf(path: str | os.PathLike) -> HFSpec:
    """Read a byte-level BPE tokenizer.json; raises TokenizerFileError naming what is unsupported."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise TokenizerFileError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise TokenizerFileError(f"{path}: not a Hugging Face tokenizer.json (no 'model' object)")
    try:
        return _read(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TokenizerFileError(f"{path}: {exc}") from None


def _read(data: dict) -> HFSpec:
    for key in ("truncation", "padding"):
        if data.get(key) is not None:
            raise ValueError(f"'{key}' is set; it changes the ids and is unsupported (set it to null)")
    model = data["model"]
    if model.get("type", "BPE") != "BPE":
        raise ValueError(f"model type {model['type']!r} is unsupported: only byte-level BPE models can be read")
    for key, harmless in (("byte_fallback", (False, None)), ("dropout", (None, 0, 0.0)),
                          ("continuing_subword_prefix", (None, "")), ("end_of_word_suffix", (None, ""))):  # fmt: skip
        if model.get(key) not in harmless:
            raise ValueError(f"model.{key}={model[key]!r} is unsupported (it is not byte-level BPE as GPT-2 does it)")
    normalizer = _normalizer(data.get("normalizer"))
    pattern, split_regex = _pre_tokenizer(data.get("pre_tokenizer"))

    names = {token["content"] for token in data.get("added_tokens") or []}
    vocab: dict[bytes, int] = {}
    for text, token_id in model["vocab"].items():
        if text not in names or is_byte_level(text):  # an added token may be written as plain text
            vocab[bytes_of(text)] = int(token_id)
    if model.get("unk_token") is not None and len([b for b in range(256) if bytes([b]) in vocab]) < 256:
        raise ValueError("an unk_token with bytes missing from the vocabulary is unsupported")

    # `tokenizers` gives an added token the id of the same text in the vocab,
    # or else the next id after the vocab, in the order listed, whatever id the
    # file says; a file that says otherwise is refused rather than misread.
    added: dict[str, int] = {}
    next_id = len(model["vocab"])
    for token in data.get("added_tokens") or []:
        name = token["content"]
        for flag in ("lstrip", "rstrip", "single_word"):
            if token.get(flag):
                raise ValueError(f"added token {name!r} sets {flag}, which is unsupported")
        if name in model["vocab"] or name in added:
            expected = model["vocab"].get(name, added.get(name))
        else:
            expected, next_id = next_id, next_id + 1
        if int(token["id"]) != expected:
            raise ValueError(f"added token {name!r} has id {token['id']} in the file, but tokenizers gives it id {expected}")
        added[name] = expected
    ids = set(vocab.values())
    if clash := [name for name, i in added.items() if i in ids and name not in model["vocab"]]:
        raise ValueError(f"added token {clash[0]!r} gets id {added[clash[0]]}, which a vocab token has already")

    merges = merge_pairs(model.get("merges") or [], vocab)
    ignore_merges = bool(model.get("ignore_merges", False))
    return HFSpec(vocab, merges, added, pattern, split_regex, ignore_merges, normalizer)


def merge_pairs(merges: Iterable[str | Sequence[str]], vocab: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merges ("left right" strings, or [left, right]) as byte pairs, each checked against `vocab`."""
    pairs = []
    for line, merge in enumerate(merges):
        parts = merge.split(" ") if isinstance(merge, str) else merge
        if len(parts) != 2:
            raise ValueError(f"merge {line} {merge!r} is not two tokens separated by one space")
        pair = bytes_of(parts[0]), bytes_of(parts[1])
        if pair[0] not in vocab or pair[1] not in vocab or pair[0] + pair[1] not in vocab:
            raise ValueError(f"merge {line} {merge!r} refers to a token that is not in the vocabulary")
        pairs.append(pair)
    return pairs


def is_byte_level(text: str) -> bool:
    """Whether `text` is written in GPT-2's byte-level characters (so `bytes_of` reads it)."""
    return all(c in _TO_BYTE for c in text)


def bytes_of(text: str) -> bytes:
    """The bytes a token text in GPT-2's byte-level characters stands for."""
    try:
        return bytes(map(_TO_BYTE.__getitem__, text))
    except KeyError:
        raise ValueError(f"token {text!r} is not written in byte-level characters: not a byte-level BPE") from None


def _steps(spec: dict | None, key: str) -> list[dict]:
    """The steps of a normalizer or pre-tokenizer: a Sequence's list under `key`, or the one step, or none."""
    return spec.get(key, []) if spec and spec.get("type") == "Sequence" else [spec] if spec else []


def _normalizer(spec: dict | None) -> str | None:
    steps = _steps(spec, "normalizers")
    kinds = [step.get("type") for step in steps]
    if any(kind != "NFC" for kind in kinds):
        raise ValueError(f"normalizer {kinds!r} is unsupported (only none or NFC)")
    return "NFC" if kinds else None


def _pre_tokenizer(spec: dict | None) -> tuple[str, bool]:
    """(pattern, whether it is a Split regex) of a pre-tokenizer, which must end in ByteLevel."""
    steps = _steps(spec, "pretokenizers")
    pattern = None
    for i, step in enumerate(steps):
        kind = step.get("type")
        last = i == len(steps) - 1
        if kind == "Split" and pattern is None and not last:
            if step.get("behavior") != "Isolated" or step.get("invert"):
                raise ValueError(f"a Split pre-tokenizer with behavior {step.get('behavior')!r}, invert "
                                 f"{step.get('invert')!r} is unsupported (only Isolated, not inverted)")  # fmt: skip
            pattern = step["pattern"]["Regex"] if "Regex" in step["pattern"] else regex.escape(step["pattern"]["String"])
        elif kind == "ByteLevel" and last:
            if step.get("add_prefix_space"):
                raise ValueError("a ByteLevel pre-tokenizer with add_prefix_space is unsupported")
            if step.get("use_regex", True):
                if pattern is not None:
                    raise ValueError("a Split pre-tokenizer followed by ByteLevel with use_regex is unsupported")
                pattern = HF_GPT2_REGEX
        else:
            names = [s.get("type") for s in steps]
            raise ValueError(f"pre-tokenizer {names!r} is unsupported (only a Split regex and/or ByteLevel, ending in ByteLevel)")
    if pattern is None:
        raise ValueError("the pre-tokenizer neither splits (Split or ByteLevel use_regex) nor is byte-level")
    if pattern in _BUILT_IN:
        return _BUILT_IN[pattern], False
    if regex.compile(pattern).match("") is not None:
        raise ValueError(f"a Split regex that matches the empty string is unsupported: {pattern!r}")
    return pattern, True


def write_hf(path: str | os.PathLike, spec: HFSpec) -> None:
    """Write `spec` as a tokenizer.json that `tokenizers` reads (atomically)."""
    show = byte_to_char()

    def text(token: bytes) -> str:
        return "".join(show[b] for b in token)

    pattern = HF_SPELLINGS.get(spec.pattern, spec.pattern)
    if pattern == HF_GPT2_REGEX:
        pre_tokenizer = {**_BYTE_LEVEL, "use_regex": True}
    else:
        split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [split, _BYTE_LEVEL]}
    data = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for name, i in sorted(spec.added_tokens.items(), key=lambda item: item[1])
        ],
        "normalizer": {"type": spec.normalizer} if spec.normalizer else None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {**_BYTE_LEVEL, "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {**_BYTE_LEVEL, "add_prefix_space": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": spec.ignore_merges,
            "vocab": {text(token): i for token, i in sorted(spec.vocab.items(), key=lambda item: item[1])},
            "merges": [[text(left), text(right)] for left, right in spec.merges],
        },
    }
    write_atomically(path, json.dumps(data, ensure_ascii=False).encode("utf-8"))
