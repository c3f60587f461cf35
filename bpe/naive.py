"""BPE training the slow, obvious way: the version to read first.

Count every adjacent pair in the corpus, merge the most frequent one into a
new token, and repeat. Each merge recounts everything, so this takes
O(merges x corpus) time; `bpe.train.learn_merges` learns exactly the same
merges incrementally, and the tests hold it to this version.

    merges = train_naive("low lower lowest", n_merges=3)
    # merges[i] = (left id, right id), joined into the new id 256 + i
"""

from __future__ import annotations

from collections import Counter

import regex

from .pretokenize import GPT2_PATTERN

Pair = tuple[int, int]


def train_naive(text: str, n_merges: int, pattern: str = GPT2_PATTERN) -> list[Pair]:
    """Learn up to `n_merges` merges from `text`; merge i creates token 256 + i.

    The rules are those of `Tokenizer.train`: the most frequent pair wins, ties
    go to the smallest (left id, right id); a word merges left to right, so
    "aaa" merges (a, a) once; a pair whose bytes are already a token (built
    from another split) merges into that token and adds no id. Fewer merges
    come back when the corpus runs out of pairs.
    """
    vocab = [bytes([b]) for b in range(256)]  # id -> the bytes it stands for
    # BPE never merges across pre-tokens, so each distinct one is a word, kept with its count.
    words = Counter(tuple(piece.encode("utf-8")) for piece in regex.findall(pattern, text))
    merges: list[Pair] = []
    while len(merges) < n_merges:
        counts: Counter[Pair] = Counter()
        for word, freq in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] += freq
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        joined = vocab[best[0]] + vocab[best[1]]
        if joined in vocab:
            new_id = vocab.index(joined)
        else:
            new_id = len(vocab)
            vocab.append(joined)
            merges.append(best)
        merged: Counter[tuple[int, ...]] = Counter()
        for word, freq in words.items():
            # two words can become one when a merge reuses an id ("a"+"ab" and "aa"+"b")
            merged[merge_word(word, best, new_id)] += freq
        words = merged
    return merges


def merge_word(word: tuple[int, ...], pair: Pair, new_id: int) -> tuple[int, ...]:
    """`word` with each occurrence of `pair`, left to right, replaced by `new_id`."""
    out, i = [], 0
    while i < len(word):
        if word[i : i + 2] == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)
