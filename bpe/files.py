"""The tokenizer file: one JSON header line, then one merge per line.

    {"format": "bpe-tokenizer", "version": 1, "pattern": ..., "special_tokens": {...}, ...}
    116 104
    32 116
    ...

Line i after the header reads "left right": merge i joins tokens `left` and
`right` into token 256 + i. Ids 0-255 are the single bytes, in the order
given by the header's "byte_order" (null means byte b is id b). A sha256 of
the merge lines in the header catches truncation and stray edits.
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


class TokenizerFileError(ValueError):
    """A tokenizer file that is corrupted, truncated or not ours."""


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything a tokenizer file holds."""

    merges: list[Pair]
    pattern: str
    special_tokens: dict[str, int]
    byte_order: list[int] | None = None


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
        _check_header(pattern, specials, header["merges"], len(merges))
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenizerFileError(f"{path}: malformed {FORMAT} file: {exc}") from None
    return TokenizerSpec(merges, pattern, specials, byte_order)


def _parse_merge(line: str) -> Pair:
    # which ids a merge may refer to is the Tokenizer's check, made when the file is loaded
    left, right = (int(field) for field in line.split(" "))
    return left, right


def _check_header(pattern: object, specials: object, n_declared: object, n_merges: int) -> None:
    if not isinstance(pattern, str):
        raise ValueError("pattern must be a string")
    if n_declared != n_merges:
        raise ValueError(f"header declares {n_declared} merges but the file has {n_merges}")
    if not isinstance(specials, dict) or sorted(specials.values()) != list(
        range(256 + n_merges, 256 + n_merges + len(specials))
    ):
        raise ValueError("special token ids must follow the merges consecutively")
