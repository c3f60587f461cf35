"""Reading GPT-2's released vocabulary files (encoder.json and vocab.bpe).

GPT-2 stores tokens as text: each byte is shown as one printable character
so that the files contain no whitespace or control characters inside a
token. Printable Latin-1 bytes stand for themselves; the other 68 bytes are
shifted to code points 256, 257, ... in byte order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .files import TokenizerFileError

Pair = tuple[int, int]


def byte_to_char() -> dict[int, str]:
    """GPT-2's table from a byte value to the character that shows it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 256
    for b in range(256):
        if b not in table:
            table[b] = chr(shifted)
            shifted += 1
    return table


def read_gpt2_files(
    encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike
) -> tuple[list[int], list[Pair], dict[str, int]]:
    """Return (byte of each of ids 0-255, merges, special tokens) from GPT-2's files.

    Checks that merge i builds token id 256 + i, which is what lets the merge
    list stand in for the whole vocabulary.
    """
    try:
        encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise TokenizerFileError(f"{encoder_json}: not a JSON file, truncated or corrupted? ({exc})") from None
    if not isinstance(encoder, dict) or not all(isinstance(i, int) for i in encoder.values()):
        raise TokenizerFileError(f"{encoder_json}: expected a JSON object from token to integer id")
    # Split on "\n" only: str.splitlines() would also split at characters like U+0085.
    try:
        lines = Path(vocab_bpe).read_text(encoding="utf-8").rstrip("\n").split("\n")
    except UnicodeDecodeError as exc:
        raise TokenizerFileError(f"{vocab_bpe}: not UTF-8 text ({exc})") from None
    first_line = 2 if lines[0].startswith("#version") else 1
    lines = lines[first_line - 1 :]
    char_to_byte = {c: b for b, c in byte_to_char().items()}

    byte_of_id = [-1] * 256
    for text, token_id in encoder.items():
        if token_id < 256:
            if len(text) != 1 or text not in char_to_byte:
                raise TokenizerFileError(f"{encoder_json}: id {token_id} should be a single byte, got {text!r}")
            byte_of_id[token_id] = char_to_byte[text]
    if sorted(byte_of_id) != list(range(256)):
        raise TokenizerFileError(f"{encoder_json}: ids 0-255 are not a permutation of the 256 bytes")

    merges: list[Pair] = []
    for line_number, line in enumerate(lines, start=first_line):
        left, _, right = line.partition(" ")
        expected = 256 + len(merges)
        if left not in encoder or right not in encoder or encoder.get(left + right) != expected:
            raise TokenizerFileError(f"{vocab_bpe}:{line_number}: merge {line!r} should join two tokens into id {expected}")
        merges.append((encoder[left], encoder[right]))

    first_special = 256 + len(merges)
    specials = {text: i for text, i in encoder.items() if i >= first_special}
    if sorted(specials.values()) != list(range(first_special, first_special + len(specials))):
        raise TokenizerFileError(f"{encoder_json}: ids after the merges are not consecutive")
    return byte_of_id, merges, specials
