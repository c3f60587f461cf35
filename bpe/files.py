"""The tokenizer file: one JSON header line, then one merge per line.

    {"format": "bpe-tokenizer", "version": 1, "pattern": ..., "special_tokens": {...}, ...}
    116 104
    32 116
    ...

Line i after the header reads "left right": merge i joins tokens `left` and
`right` into token 256 + i. Ids 0-255 are the single bytes, in the order
given by the header's "byte_order" (null means byte b is id b). Special
tokens take ids after the merges (consecutive for ours; tiktoken's leave
gaps). A sha256 of the merge lines in the header catches truncation and
stray edits. Optional keys: "name", and "unicode", the Unicode version of the
`regex` the tokenizer was trained under (its pre-tokens depend on it).

A file is read as untrusted: 30 merges that each join a token to itself
define a token of a gigabyte, so the byte length of the tokens is worked out
(as numbers) and checked against a bound set by the number of merges before
any token is built; special ids sit within a few of the merges' end.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

FORMAT = "bpe-tokenizer"
VERSION = 1

Pair = tuple[int, int]

# The tokens of a file may take at most this many bytes per merge, plus TOKEN_BYTES_BASE:
# trained tokens average well under 16 bytes (GPT-2's 7, cl100k's 7).
TOKEN_BYTES_PER_MERGE = 1024
TOKEN_BYTES_BASE = 1 << 20


class TokenizerFileError(ValueError):
    """A tokenizer file that is corrupted, truncated or not ours."""


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything a tokenizer file holds."""

    merges: list[Pair]
    pattern: str
    special_tokens: dict[str, int]
    byte_order: list[int] | None = None
    name: str = "bpe"
    unicode_version: str | None = None


def _merge_lines(merges: list[Pair]) -> bytes:
    return "".join(f"{left} {right}\n" for left, right in merges).encode("ascii")


def write(path: str | os.PathLike, spec: TokenizerSpec) -> None:
    """Write a tokenizer file atomically."""
    body = _merge_lines(spec.merges)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "pattern": spec.pattern,
        "special_tokens": spec.special_tokens,
        "byte_order": spec.byte_order,
        "merges": len(spec.merges),
        "sha256": hashlib.sha256(body).hexdigest(),
        "name": spec.name,
        "unicode": spec.unicode_version,
    }
    write_atomically(path, json.dumps(header, ensure_ascii=True).encode("ascii") + b"\n" + body)


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write through a temporary file and a rename: a reader sees the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would make the file private
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read(path: str | os.PathLike) -> TokenizerSpec:
    """Read and fully validate a tokenizer file."""
    data = Path(path).read_bytes()
    header_line, _, body = data.partition(b"\n")
    try:
        header = json.loads(header_line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TokenizerFileError(f"{path}: not a {FORMAT} file (its first line is not our JSON header)")
    if header.get("version") != VERSION:
        raise TokenizerFileError(f"{path}: unsupported {FORMAT} version {header.get('version')!r}, expected {VERSION}")
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise TokenizerFileError(f"{path}: merges do not match the header's checksum (truncated or edited?)")
    try:
        merges = [_parse_merge(line) for line in body.decode("ascii").splitlines()]
        pattern, specials, byte_order = header["pattern"], header["special_tokens"], header["byte_order"]
        name, unicode_version = header.get("name", "bpe"), header.get("unicode")
        _check_header(pattern, specials, header["merges"], len(merges), name, unicode_version)
        _check_token_bytes(merges)
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenizerFileError(f"{path}: malformed {FORMAT} file: {exc}") from None
    return TokenizerSpec(merges, pattern, specials, byte_order, name, unicode_version)


def _parse_merge(line: str) -> Pair:
    # which ids a merge may refer to is the Tokenizer's check, made when the file is loaded
    left, right = (int(field) for field in line.split(" "))
    return left, right


def _check_header(
    pattern: object, specials: object, n_declared: object, n_merges: int, name: object, unicode_version: object
) -> None:
    if not isinstance(pattern, str):
        raise ValueError("pattern must be a string")
    if not isinstance(name, str) or not (unicode_version is None or isinstance(unicode_version, str)):
        raise ValueError("name and unicode must be strings")
    if n_declared != n_merges:
        raise ValueError(f"header declares {n_declared} merges but the file has {n_merges}")
    first = 256 + n_merges
    if not isinstance(specials, dict) or not all(type(i) is int for i in specials.values()):
        raise ValueError("special_tokens must map each name to an integer id")
    # tiktoken leaves a few ids unused between the merges and its specials (cl100k: 1 before, 15 among)
    last = first + 2 * len(specials) + 256
    if len(set(specials.values())) != len(specials) or not all(first <= i < last for i in specials.values()):
        raise ValueError(f"special token ids must be distinct and between {first} (after the merges) and {last - 1}")


def _check_token_bytes(merges: list[Pair]) -> None:
    """Refuse merges whose tokens would take more bytes than the bound, before building any."""
    limit = TOKEN_BYTES_BASE + TOKEN_BYTES_PER_MERGE * len(merges)
    lengths = [1] * 256
    total = 256
    for i, (left, right) in enumerate(merges):
        if not (0 <= left < len(lengths) and 0 <= right < len(lengths)):
            return  # an id that does not exist yet: the Tokenizer names it
        lengths.append(lengths[left] + lengths[right])
        total += lengths[-1]
        if total > limit:
            raise ValueError(
                f"its {len(merges)} merges define tokens of more than {limit:,} bytes in all (merge {i} makes one of "
                f"{lengths[-1]:,} bytes), beyond {TOKEN_BYTES_PER_MERGE} bytes a merge: merges that keep joining a "
                f"token to itself, not a trained tokenizer"
            )
