"""Encoding text: pre-tokens merged into tokens, as tiktoken or Hugging Face do.

`TextEncoder` turns text into ids: it cuts the text into pre-tokens, encodes
each with a `PieceEncoder`, and caches what it has seen; `encode_in_processes`
spreads a batch over forked workers. What follows is about one pre-token.

Start from single bytes and repeatedly merge the adjacent pair of parts with
the lowest rank, leftmost first on ties, until no adjacent pair has a rank.
Two libraries, two ways to rank a pair:

* tiktoken ranks the *joined bytes*: any two parts whose concatenation is a
  token may merge, and the rank is that token's id. For a tokenizer trained
  by merges this replays the merges in training order, and it makes any rank
  table (GPT-2's included) encode exactly as tiktoken would.
* Hugging Face `tokenizers` ranks the *pair*: only the listed merges
  ("left right") apply, ranked by their position in the list.

`merge_parts` is the simple loop: each step scans all pairs, so a piece of n
bytes costs O(n^2), which is the fastest there is for the short pieces of
ordinary text. `merge_long_parts` gives exactly the same parts in
O(n log n), for the long pieces that would otherwise hang (minified code, a
DNA string, a run of one character).
"""

from __future__ import annotations

import heapq
import multiprocessing
import sys
import unicodedata
from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import accumulate, chain, repeat
from operator import add

import numpy as np

NOT_A_TOKEN = sys.maxsize

# Pieces longer than this (in bytes) take the O(n log n) path.
LONG_PIECE = 256

# A round of `_merge_in_rounds` costs O(parts) numpy work, so rounds continue
# only while they merge at least one pair in this many; then the heap takes over.
ROUND_MIN_SHARE = 64

# The rank of the pair piece[start:mid] + piece[mid:end].
PairRank = Callable[[bytes, int, int, int], int]


class PieceEncoder:
    """Token ids for a pre-token's bytes under one merge rule.

    `ids` maps token bytes to ids. `merge_ranks` is None for tiktoken's rule
    (the rank of joined bytes is their id in `ids`), or Hugging Face's merge
    list as {(left bytes, right bytes): rank}. With `whole_pieces` a piece that
    is itself a token is that token however the merges would split it
    (tiktoken always does this; Hugging Face when `ignore_merges` is set).
    Bytes that are no token at all are dropped before merging, as
    `tokenizers` does when its vocabulary lacks them.
    """

    def __init__(
        self,
        ids: dict[bytes, int],
        merge_ranks: dict[tuple[bytes, bytes], int] | None = None,
        whole_pieces: bool = True,
    ) -> None:
        self.ids = ids
        self.by_pair = merge_ranks is not None
        self.ranks: dict = merge_ranks if merge_ranks is not None else ids
        self.whole_pieces = whole_pieces
        self.known_byte = [bytes([b]) in ids for b in range(256)]
        self.lossy = not all(self.known_byte)   # see Tokenizer._setup's warning
        get = self.ranks.get
        if self.by_pair:
            self.pair_rank: PairRank = lambda piece, start, mid, end: get((piece[start:mid], piece[mid:end]), NOT_A_TOKEN)
        else:
            self.pair_rank = lambda piece, start, mid, end: get(piece[start:end], NOT_A_TOKEN)

    def encode(self, piece: bytes) -> list[int]:
        """The token ids of one pre-token."""
        if self.lossy:   # a released model's vocabulary without some bytes: dropped first, as `tokenizers` does
            piece = bytes(b for b in piece if self.known_byte[b])
        if self.whole_pieces and (token := self.ids.get(piece)) is not None:
            return [token]
        if len(piece) > LONG_PIECE:
            ends = merge_long_parts(piece, self.ids, self.pair_rank)
            return [self.ids[piece[start:end]] for start, end in zip([0, *ends], ends)]
        return [self.ids[part] for part in merge_parts(piece, self.ranks, self.by_pair)]


def merge_parts(piece: bytes, ranks: dict, by_pair: bool = False) -> list[bytes]:
    """The parts of `piece` once no adjacent pair has a rank: the simple loop.

    `ranks` is keyed by joined bytes, or by (left, right) pairs when `by_pair`.
    """
    parts = [piece[i : i + 1] for i in range(len(piece))]
    get = ranks.get
    # pair_ranks[i] is the rank of parts[i], parts[i + 1]; keeping it as a list
    # lets min() and index() (which run in C) find the next merge.
    keys = zip(parts, parts[1:]) if by_pair else map(add, parts, parts[1:])
    pair_ranks = [get(key, NOT_A_TOKEN) for key in keys]
    while pair_ranks:
        best = min(pair_ranks)
        if best == NOT_A_TOKEN:
            break
        i = pair_ranks.index(best)
        parts[i : i + 2] = (parts[i] + parts[i + 1],)
        del pair_ranks[i]
        if i > 0:
            left, right = parts[i - 1], parts[i]
            pair_ranks[i - 1] = get((left, right) if by_pair else left + right, NOT_A_TOKEN)
        if i < len(pair_ranks):
            left, right = parts[i], parts[i + 1]
            pair_ranks[i] = get((left, right) if by_pair else left + right, NOT_A_TOKEN)
    return parts


def merge_long_parts(piece: bytes, ids: dict[bytes, int], pair_rank: PairRank) -> list[int]:
    """The end offset of each part `merge_parts` would give, in O(n log n).

    Every byte of `piece` must be a token (an id in `ids`). Equal ranks are
    merged in bulk while that is exact and pays off (a run of one character
    merges half its pairs in one round), then a heap finishes.
    """
    # 32-bit offsets and ids where they fit: a long piece needs several arrays of its length.
    index_type = np.int32 if len(piece) < 2**31 and max(ids.values()) < 2**31 else np.int64
    bounds = np.arange(len(piece) + 1, dtype=index_type)  # part i is piece[bounds[i]:bounds[i + 1]]
    byte_ids = np.array([ids.get(bytes([b]), -1) for b in range(256)], dtype=index_type)
    data = np.frombuffer(piece, dtype=np.uint8)
    tokens = byte_ids[data]  # the id of each part
    # The first pairs are pairs of bytes: rank each of the 65536 at most once.
    byte_pairs = data[:-1].astype(np.int32) * 256 + data[1:]
    table = np.full(256 * 256, NOT_A_TOKEN, dtype=np.int64)
    for pair in np.flatnonzero(np.bincount(byte_pairs, minlength=256 * 256)).tolist():
        table[pair] = pair_rank(bytes(divmod(pair, 256)), 0, 1, 2)
    pair_ranks = table[byte_pairs]
    del data, byte_pairs
    bounds, pair_ranks = _merge_in_rounds(piece, ids, bounds, tokens, pair_ranks, pair_rank)
    if pair_ranks.min(initial=NOT_A_TOKEN) == NOT_A_TOKEN:
        return bounds[1:].tolist()
    return _merge_with_heap(piece, bounds, pair_ranks, pair_rank)


def _ranks_of(
    piece: bytes, left: np.ndarray, right: np.ndarray, starts: np.ndarray, mids: np.ndarray, ends: np.ndarray, pair_rank: PairRank
) -> np.ndarray:
    """Ranks of the pairs piece[start:mid] + piece[mid:end], whose tokens are `left` and `right`.

    A pair's rank depends only on its two tokens, so each distinct pair is
    looked up once (in a run of one character, all of them are the same).
    """
    keys = left.astype(np.int64) * (int(max(left.max(initial=0), right.max(initial=0))) + 1) + right
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    ranks = list(map(pair_rank, repeat(piece), starts[first].tolist(), mids[first].tolist(), ends[first].tolist()))
    return np.array(ranks, dtype=np.int64)[inverse.reshape(-1)]


def _merge_in_rounds(
    piece: bytes,
    ids: dict[bytes, int],
    bounds: np.ndarray,
    tokens: np.ndarray,
    pair_ranks: np.ndarray,
    pair_rank: PairRank,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge every pair of the lowest rank at once, round after round.

    The simple loop merges the leftmost pair of the lowest rank r, then looks
    again. The pairs a merge creates contain the new, longer part, so their
    rank differs from r; if it is higher, the next merge is the next pair of
    rank r, and a round can take them all, left to right. Where two pairs of
    rank r overlap (parts x y x of "aaa"), merging the left one removes the
    right one, so in each run of adjacent pairs every other one merges. If a
    created pair ranks below r, the loop would have merged it first: the round
    is dropped and the heap carries on from before it. Created pairs include
    the short-lived ones: between sites i and i + 2, the merged part i first
    meets part i + 2 alone, until site i + 2 merges in turn.
    """
    while len(pair_ranks):
        best = pair_ranks.min()
        if best == NOT_A_TOKEN:
            break
        hits = np.flatnonzero(pair_ranks == best)
        if len(hits) * ROUND_MIN_SHARE < len(pair_ranks):
            break
        # Position of each hit within its run of adjacent hits; even ones merge.
        index = np.arange(len(hits))
        run_start = np.maximum.accumulate(np.where(np.diff(hits, prepend=-2) != 1, index, 0))
        sites = hits[(index - run_start) % 2 == 0]
        # Pairs of one rank join the same bytes, so every site makes one token.
        merged_token = ids[piece[bounds[sites[0]] : bounds[sites[0] + 2]]]
        # Merging at site i removes bound i + 1 and pair i; the merged part's
        # new index is i minus the sites before it, and the pairs on both of
        # its sides are new.
        keep = np.ones(len(bounds), dtype=bool)
        keep[sites + 1] = False
        new_bounds = bounds[keep]
        new_tokens = tokens[keep[:-1]]
        merged = sites - np.arange(len(sites))
        new_tokens[merged] = merged_token
        new_ranks = np.delete(pair_ranks, sites)
        changed = np.zeros(len(new_ranks) + 1, dtype=bool)
        changed[merged] = True
        changed[merged[merged > 0] - 1] = True
        changed = np.flatnonzero(changed[:-1])
        ranks = _ranks_of(
            piece, new_tokens[changed], new_tokens[changed + 1],
            new_bounds[changed], new_bounds[changed + 1], new_bounds[changed + 2], pair_rank,
        )  # fmt: skip
        passing = sites[:-1][np.diff(sites) == 2]
        passing_ranks = _ranks_of(
            piece, np.full(len(passing), merged_token), tokens[passing + 2],
            bounds[passing], bounds[passing + 2], bounds[passing + 3], pair_rank,
        )  # fmt: skip
        if min(ranks.min(initial=NOT_A_TOKEN), passing_ranks.min(initial=NOT_A_TOKEN)) < best:
            break
        new_ranks[changed] = ranks
        bounds, tokens, pair_ranks = new_bounds, new_tokens, new_ranks
    return bounds, pair_ranks


def _merge_with_heap(piece: bytes, bounds: np.ndarray, pair_ranks: np.ndarray, pair_rank: PairRank) -> list[int]:
    """Finish the merges with a linked list of parts and a heap of pair ranks.

    A part is named by its start offset; `following[s]` is the start of the
    next part (len(piece) after the last) and `preceding[s]` of the previous
    one. The heap holds rank * width + start, so the smallest entry is the
    lowest rank, leftmost on ties: exactly the simple loop's choice. Merges
    make entries stale; `rank_at[s]`, the rank of the pair now starting at s,
    tells: an entry is current iff its rank equals it. (Two pairs starting at
    s with the same rank join the same bytes, and since part boundaries only
    disappear, they are the same two parts.)
    """
    n = len(piece)
    width = n + 1
    starts = bounds[:-1]
    following = np.zeros(width, dtype=np.int64)
    following[starts] = bounds[1:]
    preceding = np.zeros(width, dtype=np.int64)
    preceding[bounds[1:]] = starts
    rank_at = np.full(width, NOT_A_TOKEN, dtype=np.int64)
    rank_at[starts[:-1]] = pair_ranks
    live = pair_ranks != NOT_A_TOKEN
    heap = (pair_ranks[live] * width + starts[:-1][live]).tolist()
    heapq.heapify(heap)
    following, preceding, rank_at = following.tolist(), preceding.tolist(), rank_at.tolist()
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        rank, start = divmod(pop(heap), width)
        if rank_at[start] != rank:
            continue
        mid = following[start]
        end = following[mid]
        following[start] = end
        rank_at[mid] = NOT_A_TOKEN
        rank_at[start] = NOT_A_TOKEN
        if end < n:
            preceding[end] = start
            rank = rank_at[start] = pair_rank(piece, start, end, following[end])
            if rank != NOT_A_TOKEN:
                push(heap, rank * width + start)
        if start > 0:
            before = preceding[start]
            rank = rank_at[before] = pair_rank(piece, before, start, end)
            if rank != NOT_A_TOKEN:
                push(heap, rank * width + before)
    ends = []
    start = 0
    while start < n:
        start = following[start]
        ends.append(start)
    return ends


# ---------------------------------------------------------------- whole texts

# Entries each cache keeps before it is emptied (about 40 MB).
CACHE_LIMIT = 1 << 18
# Chunks and pre-tokens longer than this (in characters) are not cached.
CACHE_MAX_CHARS = 128
# The chunks in this many first characters of a text decide how to encode it.
SAMPLE_CHARS = 1024
# encode_in_processes forks workers only when there is at least this much text.
PARALLEL_MIN_CHARS = 1 << 20


class TextEncoder:
    """Token ids for ordinary text (no special tokens): pre-tokenize, encode each piece, cache.

    The cache maps a string to its ids. Its strings are pre-tokens and, when
    `chunks` is given (a regex whose matches can be pre-tokenized apart, see
    `bpe.pretokenize.CUTTABLE_PATTERNS`), chunks: text between two safe
    cuts, such as " world!" or " the". Text whose chunks are cached encodes
    fastest, as there are fewer chunks than pre-tokens and cutting is quicker
    than pre-tokenizing. Text that is mostly new is best split into
    pre-tokens at once, since each new chunk would be split again. Long
    strings stay out of the cache: one huge word must not fill memory.
    """

    def __init__(
        self,
        pieces: PieceEncoder,
        pretokenize: Callable[[str], list[str]],
        chunks: Callable[..., list[str]] | None = None,
        normalizer: str | None = None,
    ) -> None:
        self.pieces = pieces
        self.pretokenize = pretokenize
        self.chunks = chunks
        self.normalizer = normalizer
        self.cache: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str) -> list[int]:
        """The ids of `text`. Surrogates are read as tiktoken reads them: a pair
        written as two code units is the character it stands for, a lone one U+FFFD."""
        try:
            return self._encode(text)
        except UnicodeEncodeError:
            return self._encode(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))

    def _encode(self, text: str) -> list[int]:
        if self.normalizer is not None:
            text = unicodedata.normalize(self.normalizer, text)
        chunks = self._cached_chunks(text)
        if chunks is not None:
            return self._encode_mostly_cached(chunks)
        return self._encode_mostly_new(self.pretokenize(text))

    def _cached_chunks(self, text: str) -> list[str] | None:
        """`text` cut into chunks if that is allowed and most of its first chunks are cached."""
        if self.chunks is None:
            return None
        head = self.chunks(text, 0, SAMPLE_CHARS)
        if 2 * sum(map(self.cache.__contains__, head)) < len(head):
            return None
        return head if len(text) <= SAMPLE_CHARS else self.chunks(text)

    def _encode_mostly_new(self, pieces: list[str]) -> list[int]:
        cache = self.cache
        try:
            return list(chain.from_iterable(map(cache.__getitem__, pieces)))
        except KeyError:
            pass
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        new = {piece: self._encode_piece(piece) for piece in set(pieces).difference(cache)}
        cache.update(new)
        ids = list(chain.from_iterable(map(cache.__getitem__, pieces)))
        for piece in new:
            if len(piece) > CACHE_MAX_CHARS:
                del cache[piece]
        return ids

    def _encode_mostly_cached(self, chunks: list[str]) -> list[int]:
        cache = self.cache
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        ids: list[int] = []
        remaining = iter(chunks)
        uncached: dict[str, tuple[int, ...]] = {}
        # Cached chunks are looked up in C; a miss stops the lookups at the
        # chunk that missed, which is encoded, and then they resume after it.
        while True:
            try:
                ids.extend(chain.from_iterable(map(cache.__getitem__, remaining)))
                return ids
            except KeyError as miss:
                chunk = miss.args[0]
            encoded = uncached.get(chunk)
            if encoded is None:
                encoded = self._encode_chunk(chunk)
                (uncached if len(chunk) > CACHE_MAX_CHARS else cache)[chunk] = encoded
            ids += encoded

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        return tuple(self.pieces.encode(piece.encode("utf-8")))

    def _encode_chunk(self, chunk: str) -> tuple[int, ...]:
        cache = self.cache
        ids: list[int] = []
        # A pre-token alone is that one pre-token (for cuttable patterns), so a
        # chunk and a pre-token with the same text share their cache entry.
        for piece in self.pretokenize(chunk):
            encoded = cache.get(piece)
            if encoded is None:
                encoded = self._encode_piece(piece)
                if len(piece) <= CACHE_MAX_CHARS:
                    cache[piece] = encoded
            ids += encoded
        return tuple(ids)


def encode_in_processes(encode: Callable[[str], list[int]], texts: Sequence[str], workers: int) -> list[list[int]]:
    """`[encode(text) for text in texts]`, large batches split over `workers` forked processes.

    This process encodes the first share while the workers do the rest. fork
    lets them inherit `encode` (a warm cache included) and the texts without
    pickling; they send back flat arrays of ids, which pickle as raw bytes,
    with the length of each text's part. Where there is no fork (Windows),
    and for small batches, this process encodes them all.
    """
    workers = min(workers, len(texts))
    fork_ok = "fork" in multiprocessing.get_all_start_methods()
    if workers < 2 or not fork_ok or sum(map(len, texts)) < PARALLEL_MIN_CHARS:
        return [encode(text) for text in texts]
    # Shares of about equal length, each a run of whole texts.
    ends = list(accumulate(map(len, texts)))
    bounds = [0, *(bisect_left(ends, ends[-1] * w // workers) for w in range(1, workers)), len(texts)]
    ranges = list(zip(bounds, bounds[1:]))
    with multiprocessing.get_context("fork").Pool(workers - 1, _worker_init, (encode, texts)) as pool:
        pending = pool.map_async(_worker_encode, ranges[1:], chunksize=1)
        batch = [encode(text) for text in texts[: bounds[1]]]
        for flat_ids, lengths in pending.get():
            flat = flat_ids.tolist()
            start = 0
            for n in lengths:
                batch.append(flat[start : start + n])
                start += n
    return batch


_worker_job: tuple[Callable[[str], list[int]], Sequence[str]] | None = None


def _worker_init(encode: Callable[[str], list[int]], texts: Sequence[str]) -> None:
    global _worker_job
    _worker_job = (encode, texts)


def _worker_encode(bounds: tuple[int, int]) -> tuple[array, array]:
    assert _worker_job is not None
    encode, texts = _worker_job
    encoded = [encode(text) for text in texts[bounds[0] : bounds[1]]]
    return array("q", chain.from_iterable(encoded)), array("q", map(len, encoded))
