"""Encoding one pre-token with ranked byte sequences, as tiktoken does.

Every token is a byte string with a rank (its id). Starting from single
bytes, repeatedly merge the adjacent pair whose concatenation has the lowest
rank, leftmost first on ties, until no adjacent concatenation is a token.
For a tokenizer trained by merges this replays the merges in training order;
stating it in terms of ranks makes any rank table (GPT-2's included) encode
exactly as tiktoken would.
"""

from __future__ import annotations

import sys

_NOT_A_TOKEN = sys.maxsize


def encode_piece(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Token ids for one pre-token's bytes."""
    # tiktoken's shortcut, which is also part of its semantics: a piece that is
    # itself a token is that token, however the merges would have split it.
    token = ranks.get(piece)
    if token is not None:
        return [token]
    parts = [piece[i : i + 1] for i in range(len(piece))]
    # pair_ranks[i] is the rank of parts[i] + parts[i + 1]; keeping it as a list
    # lets min() and index() (which run in C) find the next merge.
    pair_ranks = [ranks.get(parts[i] + parts[i + 1], _NOT_A_TOKEN) for i in range(len(parts) - 1)]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _NOT_A_TOKEN:
            break
        i = pair_ranks.index(best)
        parts[i : i + 2] = (parts[i] + parts[i + 1],)
        del pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = ranks.get(parts[i - 1] + parts[i], _NOT_A_TOKEN)
        if i < len(pair_ranks):
            pair_ranks[i] = ranks.get(parts[i] + parts[i + 1], _NOT_A_TOKEN)
    return [ranks[part] for part in parts]
