"""The completions of `Tokenizer.encode_with_unstable`: tiktoken's rule, step by step.

The ids of a text's last pre-token (its "tail") may change when text is
appended: the tail may merge with what follows. tiktoken lists the id
sequences that may follow the stable ids instead: every token that starts
with the tail; for each cut of the tail into a prefix and a suffix, every
token starting with the suffix, joined to the prefix and retokenized, up to
the tail's length; and, when the tail ends in whitespace that appended text
could split off, the tail encoded in those two parts.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import islice

from .encode import TextEncoder
from .pretokenize import compile_pattern


def completions(
    tail: bytes, text: TextEncoder, sorted_tokens: list[bytes], ranks: dict[bytes, int], decoder: dict[int, bytes]
) -> list[list[int]]:
    """The id sequences that may complete `tail` (see the module docstring), in no order."""
    found = {(ranks[token],) for token in _starting_with(sorted_tokens, tail)}
    for cut in range(1, len(tail)):
        prefix, suffix = tail[:cut], tail[cut:]
        for token in _starting_with(sorted_tokens, suffix):
            joined = prefix + token
            try:
                encoded = text.encode(joined.decode("utf-8"))
            except UnicodeDecodeError:
                encoded = text.pieces.encode(joined)
            sequence, length = [], 0
            for token_id in encoded:  # just as far as the tail reaches
                sequence.append(token_id)
                length += len(decoder[token_id])
                if length >= len(tail):
                    break
            found.add(tuple(sequence))
    last = _last_character(tail)
    if len(tail) > 1 and last is not None and compile_pattern(r"\s").fullmatch(last):
        cut = len(tail) - len(last.encode("utf-8"))
        if cut > 0:
            found.add((*text.pieces.encode(tail[:cut]), *text.pieces.encode(tail[cut:])))
    return [list(sequence) for sequence in found]


def _starting_with(sorted_tokens: list[bytes], prefix: bytes) -> list[bytes]:
    """The tokens of `sorted_tokens` that start with `prefix`: a run from where `prefix` would go."""
    found = []
    for token in islice(sorted_tokens, bisect_left(sorted_tokens, prefix), None):
        if not token.startswith(prefix):
            break
        found.append(token)
    return found


def _last_character(data: bytes) -> str | None:
    """The character the last bytes of `data` encode in UTF-8, or None if they are not one."""
    for size in range(1, min(4, len(data)) + 1):
        try:
            return data[-size:].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None
