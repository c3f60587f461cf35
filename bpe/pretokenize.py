"""Pre-tokenization: cut text into the pieces that BPE works inside.

BPE never merges across a pre-token boundary, so a word like " hello" is
learned and encoded independently of its neighbours. The regex below decides
where those boundaries are; special tokens such as ``<|endoftext|>`` are cut
out before the regex runs so that it never sees them.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from pathlib import Path

import regex

# tiktoken's spelling of GPT-2's pattern ("r50k"). It matches exactly what the
# original r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# matches, but the possessive quantifiers spare the engine from backtracking.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# tiktoken's cl100k_base pattern (GPT-3.5/4): case-insensitive contractions,
# numbers in groups of at most three digits, newlines kept apart from spaces.
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# tiktoken's o200k_base pattern (GPT-4o): a word is its capitals then its
# lower-case letters (so "camelCase" is "camel" + "Case"), contractions stay
# on the word, numbers go in groups of at most three digits.
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# The patterns known by name. Each must match every character (checked by
# the tests) and have no capturing group, so that `findall` gives its
# pre-tokens; a pattern that can also be cut at SAFE_CUTS goes in
# CUTTABLE_PATTERNS below, and one `re` can run in FAST_SPELLINGS.
NAMED_PATTERNS = {"gpt2": GPT2_PATTERN, "cl100k": CL100K_PATTERN, "o200k": O200K_PATTERN}

# The standard `re` module finds the pre-tokens of the patterns above twice
# as fast as `regex`, but it has no \p{L} and its \s differs (it adds
# U+001C-U+001F). Within a fixed set of characters, though, each class is a
# plain list of characters: FAST_CHARS (Latin-1 and General Punctuation, so
# accents, curly quotes, dashes and odd spaces) classified by `regex` itself.
# With those lists, and without the possessive quantifiers (nothing inside an
# alternative follows them, so they change no match), `re` finds exactly the
# pre-tokens `regex` does in any text made of FAST_CHARS.
FAST_CHARS = "".join(map(chr, [*range(0x100), *range(0x2000, 0x2070)]))
_OUTSIDE_FAST_CHARS = re.compile(r"[^\x00-\xff\u2000-\u206f]")


def _fast_class(name: str) -> str:
    """The characters of FAST_CHARS in `regex`'s class `name`, as the inside of an `re` [...] class."""
    codes = [ord(c) for c in FAST_CHARS if regex.match(name, c)]
    runs = []
    for code in codes:
        if runs and runs[-1][1] == code - 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return "".join(rf"\u{first:04x}" + (rf"-\u{last:04x}" if last > first else "") for first, last in runs)


_L, _N, _S = _fast_class(r"\p{L}"), _fast_class(r"\p{N}"), _fast_class(r"\s")
FAST_SPELLINGS = {
    GPT2_PATTERN: (
        rf"""'(?:[sdmt]|ll|ve|re)| ?[{_L}]+| ?[{_N}]+| ?[^{_S}{_L}{_N}]+"""
        rf"""|[{_S}]+$|[{_S}]+(?![^{_S}])|[{_S}]"""
    ),
    CL100K_PATTERN: (
        rf"""'(?i:[sdmt]|ll|ve|re)|[^\r\n{_L}{_N}]?[{_L}]+|[{_N}]{{1,3}}| ?[^{_S}{_L}{_N}]+[\r\n]*"""
        rf"""|[{_S}]+$|[{_S}]*[\r\n]|[{_S}]+(?![^{_S}])|[{_S}]"""
    ),
}

# Mixed text is pre-tokenized in blocks of about this many characters, cut
# safely (see SAFE_CUTS), each block by `re` if it can be.
FAST_BLOCK_CHARS = 1 << 12

# Cutting text before a space that follows a non-space character changes no
# pre-token of these patterns (see `_safe_cut`), so text can be cut into
# chunks, such as " world!", that are pre-tokenized, encoded and cached apart.
# The standard `re` module finds these cuts several times faster than
# `regex` finds pre-tokens. Its \s covers everything `regex`'s does (and
# U+001C-U+001F besides), so where it sees a non-space, so does `regex`: each
# cut it makes is safe (it only makes a few fewer).
CUTTABLE_PATTERNS = frozenset([GPT2_PATTERN, CL100K_PATTERN, O200K_PATTERN])
SAFE_CUTS = re.compile(r"(?<=\S)(?= )")
# The chunks between those cuts, for findall (faster than splitting at them):
# one character, then anything but a space that follows a non-space.
CHUNKS = re.compile(r"[\s\S][^ ]*(?:(?<=\s) [^ ]*)*")

# `regex`'s own idea of whitespace, which may differ from str.isspace().
_NON_SPACE = regex.compile(r"\S")

# Streaming reads this many characters at a time (then cuts at a safe place).
CHUNK_CHARS = 1 << 20


# Text a custom pattern is tried on when a tokenizer is built, to say at once
# if it skips characters (see `pretokenizer`).
PROBE_TEXT = "Hello, world! 1+1=2 don't\tTAB\r\n\n  x_y-z (a/b) café naïve 日本語 🙂 \u00a0\u3000\x00\x1b"


def resolve_pattern(pattern: str) -> str:
    """Return the regex for a pattern name (see NAMED_PATTERNS) or check a custom regex.

    A custom regex that does not match every character of PROBE_TEXT warns
    (once a process): the text it skips is kept as pre-tokens of its own
    (see `pretokenizer`).
    """
    pattern = NAMED_PATTERNS.get(pattern, pattern)
    compile_pattern(pattern)
    if pattern not in NAMED_PATTERNS.values():
        _warn_if_it_skips(pattern)
    return pattern


@lru_cache(maxsize=16)
def _warn_if_it_skips(pattern: str) -> None:
    ends = [0] + [end for found in compile_pattern(pattern).finditer(PROBE_TEXT) for end in found.span()]
    skipped = [PROBE_TEXT[end:start] for end, start in zip(ends[::2], [*ends[1::2], len(PROBE_TEXT)]) if start > end]
    if skipped:
        warnings.warn(
            f"the pattern {pattern!r} does not match every character (it skips {skipped[0]!r} in {PROBE_TEXT!r}); "
            f"text it skips is kept as pre-tokens of its own, where tiktoken would drop it. "
            f"End the pattern with |\\s+|[^\\s]+ to choose how such text is cut",
            stacklevel=4,
        )


def unicode_version() -> str:
    """The newest Unicode version whose characters `regex` knows: its \\p{L}, \\s
    and \\p{N} (and so the pre-tokens of every pattern) may change with it."""
    assigned = compile_pattern(r"\P{Cn}").match
    return max((v for v, c in UNICODE_FIRSTS if assigned(chr(c))), key=lambda v: tuple(map(int, v.split("."))))


# A character first assigned in each Unicode version (a letter of a block new in it;
# U+3D000 is one `regex` 2026.11 assigns, after 17.0's CJK Extension J at U+323B0).
UNICODE_FIRSTS = [
    ("13.0", 0x30000), ("14.0", 0x1E290), ("15.0", 0x31350), ("15.1", 0x2EBF0), ("16.0", 0x1E5D0), ("17.0", 0x323B0),
    ("18.0", 0x3D000),
]  # fmt: skip


@lru_cache(maxsize=16)
def pretokenizer(pattern: str) -> Callable[[str], list[str]]:
    """A function from text to its pre-tokens, fast for the built-in patterns.

    For a named pattern that is `findall`. A custom one may skip characters,
    which tiktoken drops; here the text between two matches is kept as a
    pre-token too, so no text is ever lost (and a capturing group in the
    pattern changes nothing: pre-tokens are whole matches).
    """
    compiled = compile_pattern(pattern)
    if pattern not in NAMED_PATTERNS.values():
        return _covering(compiled)
    findall = compiled.findall
    if pattern not in FAST_SPELLINGS:
        return findall
    findall_fast = re.compile(FAST_SPELLINGS[pattern]).findall

    def pieces_of(text: str) -> list[str]:
        if text.isascii() or not _OUTSIDE_FAST_CHARS.search(text):
            return findall_fast(text)
        if len(text) <= FAST_BLOCK_CHARS:
            return findall(text)
        pieces: list[str] = []
        start = 0
        while start < len(text):
            cut = SAFE_CUTS.search(text, start + FAST_BLOCK_CHARS)
            block = text[start : cut.start() if cut else len(text)]
            pieces += findall(block) if _OUTSIDE_FAST_CHARS.search(block) else findall_fast(block)
            start += len(block)
        return pieces

    return pieces_of


def _covering(compiled: regex.Pattern) -> Callable[[str], list[str]]:
    """The matches of `compiled` in a text, and the text between them, in order."""

    def pieces_of(text: str) -> list[str]:
        pieces: list[str] = []
        end = 0
        for found in compiled.finditer(text):
            if found.start() > end:
                pieces.append(text[end : found.start()])
            if found.end() > found.start():
                pieces.append(found.group())
            end = found.end()
        if end < len(text):
            pieces.append(text[end:])
        return pieces

    return pieces_of


@lru_cache(maxsize=16)
def split_pretokenizer(pattern: str) -> Callable[[str], list[str]]:
    """Pre-tokens as Hugging Face's Split(behavior="Isolated") finds them with Oniguruma.

    The text between two matches is a pre-token too (findall alone would drop
    it), and `^` and `$` match at every line start and end.
    """
    between = rf"(?:(?!(?:{pattern}))[\s\S])+"
    try:
        return regex.compile(rf"(?:{pattern})|{between}", regex.MULTILINE).findall
    except regex.error as exc:
        raise ValueError(f"invalid pre-tokenization pattern {pattern!r}: {exc}") from None


@lru_cache(maxsize=16)
def compile_pattern(pattern: str) -> regex.Pattern:
    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"invalid pre-tokenization pattern {pattern!r}: {exc}") from None


@lru_cache(maxsize=64)
def special_regex(names: frozenset[str]) -> regex.Pattern | None:
    """A regex matching any of the given special tokens, or None for no tokens.

    Longer names come first so that when one special token is a prefix of
    another, the longer one wins regardless of set order.
    """
    if not names:
        return None
    ordered = sorted(names, key=lambda s: (-len(s), s))
    return regex.compile("|".join(regex.escape(name) for name in ordered))


def _safe_cut(buffer: str, specials: frozenset[str]) -> int:
    """Index near the end of `buffer` where the text can be split in two.

    We cut just before a space that follows a non-space character. For the
    built-in patterns no pre-token contains "<non-space><space>" and no
    pre-token ending in a non-space looks past itself, so both halves
    pre-tokenize exactly as the whole would (a custom pattern may not have
    this property; then chunk edges can shift a few pre-tokens). Returns 0
    when there is no such place, and the caller keeps reading. A cut inside
    a special token moves to its start: special tokens are boundaries anyway.
    """
    cut = buffer.rfind(" ")
    while cut > 0 and not _NON_SPACE.match(buffer, cut - 1):
        cut = buffer.rfind(" ", 0, cut)
    if cut <= 0:
        return 0
    if specials:
        reach = max(map(len, specials))
        for m in special_regex(specials).finditer(buffer, max(0, cut - reach), cut + reach):
            if m.start() < cut < m.end():
                return m.start()
    return cut


def _chunks_of(stream: io.TextIOBase, specials: frozenset[str]) -> Iterator[str]:
    buffer = ""
    while block := stream.read(CHUNK_CHARS):
        buffer += block
        cut = _safe_cut(buffer, specials)
        if cut:
            yield buffer[:cut]
            buffer = buffer[cut:]
    if buffer:
        yield buffer


def iter_texts(source: str | os.PathLike | Iterable[str], specials: frozenset[str]) -> Iterator[str]:
    """Yield a corpus as bounded pieces of text that can be pre-tokenized separately.

    A `str` is text, an `os.PathLike` is a UTF-8 file (read in chunks, never
    whole), and anything else is an iterable of separate documents.
    """
    if isinstance(source, str):
        yield from _chunks_of(io.StringIO(source), specials)
    elif isinstance(source, os.PathLike):
        # newline="" keeps "\r\n" as is, so a file trains like its text in memory.
        with open(Path(source), encoding="utf-8", newline="") as f:
            yield from _chunks_of(f, specials)
    else:
        for text in source:
            if not isinstance(text, str):
                raise TypeError(f"expected an iterable of str, got an item of type {type(text).__name__}")
            yield from _chunks_of(io.StringIO(text), specials)


def count_pretokens(text: str, pattern: str, specials: frozenset[str]) -> Counter[str]:
    """How often each distinct pre-token occurs in `text` (special tokens excluded)."""
    splitter = special_regex(specials)
    segments = splitter.split(text) if splitter is not None else (text,)
    findall = pretokenizer(pattern)
    counts: Counter[str] = Counter()
    for segment in segments:
        counts.update(findall(segment))
    return counts
