"""tiktoken's rank tables: checking one is a byte-level BPE, and reading `.tiktoken` files.

tiktoken describes an encoding by `mergeable_ranks`, token bytes -> rank, and
encodes by merging the adjacent pair whose joined bytes have the lowest rank.
For that to be a byte-level BPE, as ours is, the ranks must be 0 to n - 1,
each once; ranks 0-255 must be the 256 single bytes; and each later token
must be two lower-ranked tokens joined, which is then the merge that makes it.

A `.tiktoken` file holds one token per line: its bytes in base64, a space,
its rank (`cl100k_base.tiktoken`, `o200k_base.tiktoken`, ...).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path

from .files import TokenizerFileError

Pair = tuple[int, int]

ENDOFTEXT, ENDOFPROMPT = "<|endoftext|>", "<|endofprompt|>"
FIM = "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"

# tiktoken's encodings by the name of their rank file: (pattern name, special tokens).
TIKTOKEN_ENCODINGS: dict[str, tuple[str, dict[str, int]]] = {
    "r50k_base": ("gpt2", {ENDOFTEXT: 50256}),
    "p50k_base": ("gpt2", {ENDOFTEXT: 50256}),
    "cl100k_base": ("cl100k", {ENDOFTEXT: 100257, **dict(zip(FIM, range(100258, 100261))), ENDOFPROMPT: 100276}),
    "o200k_base": ("o200k", {ENDOFTEXT: 199999, ENDOFPROMPT: 200018}),
}


def merges_of_ranks(ranks: Mapping[bytes, int]) -> tuple[list[int], list[Pair]]:
    """(the byte of each of ids 0-255, the merges) that build exactly `ranks`.

    Merge i makes the token of rank 256 + i from the first split of it into
    two lower-ranked tokens. Raises ValueError naming the first token or rank
    that breaks a rule of the module docstring.
    """
    n = len(ranks)
    by_rank: list[bytes | None] = [None] * n
    for token, rank in ranks.items():
        if not isinstance(token, bytes) or not token or type(rank) is not int:
            raise ValueError(f"mergeable_ranks must map non-empty bytes to int ranks, got {token!r}: {rank!r}")
        if not 0 <= rank < n:
            raise ValueError(
                f"token {token!r} has rank {rank}, but {n} tokens must have the ranks 0 to {n - 1}, each once "
                f"(a rank is missing or given twice)"
            )
        if by_rank[rank] is not None:
            raise ValueError(f"rank {rank} is given to two tokens, {by_rank[rank]!r} and {token!r}")
        by_rank[rank] = token
    if n < 256 or any(len(by_rank[i]) != 1 for i in range(256)):  # type: ignore[arg-type]
        first = next((i for i in range(min(n, 256)) if len(by_rank[i]) != 1), n)  # type: ignore[arg-type]
        held = f"holds {by_rank[first]!r}" if first < n else "is missing"
        raise ValueError(f"ranks 0-255 must be the 256 single bytes of a byte-level BPE, but rank {first} {held}")
    merges: list[Pair] = []
    for rank in range(256, n):
        token = by_rank[rank]
        assert token is not None
        for cut in range(1, len(token)):
            left, right = ranks.get(token[:cut], n), ranks.get(token[cut:], n)
            if left < rank and right < rank:
                merges.append((left, right))
                break
        else:
            raise ValueError(
                f"token {token!r} of rank {rank} is not two lower-ranked tokens joined: "
                f"these ranks are not a byte-level BPE (no merge could make it)"
            )
    return [by_rank[i][0] for i in range(256)], merges  # type: ignore[index]


def read_tiktoken_file(path: str | os.PathLike) -> dict[bytes, int]:
    """token bytes -> rank from a `.tiktoken` file; TokenizerFileError naming the line at fault."""
    ranks: dict[bytes, int] = {}
    first_line: dict[bytes, int] = {}
    for number, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError
            token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
        except (binascii.Error, ValueError):
            raise TokenizerFileError(
                f"{path}:{number}: expected a base64 token and its rank, got {line[:80]!r}: not a .tiktoken file"
            ) from None
        if token in ranks:
            raise TokenizerFileError(f"{path}:{number}: token {token!r} is listed twice (first on line {first_line[token]})")
        ranks[token], first_line[token] = rank, number
    return ranks

