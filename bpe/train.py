"""The BPE training loop: learn merges from pre-token counts.

Instead of scanning the corpus once per merge, we keep
  * each distinct pre-token once, as a list of token ids, with its frequency,
  * `pair_counts`: how often each adjacent pair occurs in the corpus,
  * `where`: for each pair, the words that (may) contain it,
  * a heap of candidate pairs keyed by count,
and after each merge we rewrite only the words that contain the merged pair,
adjusting the counts of the pairs around each merge site.

Tie-breaking: the pair with the highest count wins; among equal counts the
pair with the smallest (left id, right id) wins. Ids are assigned in a fixed
order (bytes are ids 0-255, merge i makes id 256 + i), so training is
deterministic.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Mapping

from tqdm import tqdm

Pair = tuple[int, int]


def learn_merges(word_counts: Mapping[bytes, int], n_merges: int, progress: bool = True) -> list[Pair]:
    """Learn up to `n_merges` merges; merge i creates token 256 + i.

    Words are merged left to right, so in "aaa" the pair (a, a) merges once.
    If a pair's bytes already form a token (possible when the same bytes were
    built from a different split), the pair is merged into that token and no
    new id is created: that is what encoding by byte ranks would do too.
    Returns fewer merges when the corpus runs out of pairs.
    """
    vocab = [bytes([i]) for i in range(256)]
    token_of = {b: i for i, b in enumerate(vocab)}
    # Single-byte words have no pairs and can never change, so drop them.
    words = [list(w) for w in word_counts if len(w) > 1]
    freqs = [c for w, c in word_counts.items() if len(w) > 1]

    pair_counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for wi, word in enumerate(words):
        freq = freqs[wi]
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freq
            where[pair].add(wi)

    # Entries are (-count, pair). A count that later grows gets a fresh entry;
    # one that shrinks is fixed lazily when its stale entry reaches the top.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    bar = tqdm(total=n_merges, desc="bpe merges", unit="merge", delay=2.0, disable=not progress)
    while len(merges) < n_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -neg_count:
            if 0 < count < -neg_count:
                heapq.heappush(heap, (-count, pair))
            continue
        merged = vocab[pair[0]] + vocab[pair[1]]
        new_id = token_of.get(merged)
        if new_id is None:
            new_id = len(vocab)
            vocab.append(merged)
            token_of[merged] = new_id
            merges.append(pair)
            bar.update()
        for grown in _merge_pair(pair, new_id, words, freqs, pair_counts, where):
            heapq.heappush(heap, (-pair_counts[grown], grown))
    bar.close()
    return merges


def _merge_pair(
    pair: Pair,
    new_id: int,
    words: list[list[int]],
    freqs: list[int],
    pair_counts: dict[Pair, int],
    where: dict[Pair, set[int]],
) -> list[Pair]:
    """Replace `pair` by `new_id` in every word containing it, in place.

    Around each merge site "x a b y" the pairs (x, a) and (b, y) lose the
    word's frequency and (x, new) and (new, y) gain it. Two adjacent sites
    ("a b a b") work out too: the second site's left neighbour is already
    `new_id`, so it undoes the (new, a) the first site added. `where` is only
    ever added to; a word listed for a pair it no longer has is skipped.
    Returns the pairs whose count grew (all contain `new_id`).
    """
    a, b = pair
    grown: set[Pair] = set()
    for wi in where.pop(pair):
        word = words[wi]
        freq = freqs[wi]
        i = 0
        while True:
            try:
                i = word.index(a, i)
            except ValueError:
                break
            if i + 1 < len(word) and word[i + 1] == b:
                if i > 0:
                    left = word[i - 1]
                    pair_counts[left, a] -= freq
                    pair_counts[left, new_id] += freq
                    where[left, new_id].add(wi)
                    grown.add((left, new_id))
                if i + 2 < len(word):
                    right = word[i + 2]
                    pair_counts[b, right] -= freq
                    pair_counts[new_id, right] += freq
                    where[new_id, right].add(wi)
                    grown.add((new_id, right))
                word[i : i + 2] = (new_id,)
            i += 1
    del pair_counts[pair]
    return [p for p in grown if pair_counts[p] > 0]
