"""Tests for encoding speed-ups: the O(n log n) long-piece path, the caches, the fast pre-tokenizer.

Each fast path is checked against the plain version it replaces: the long-piece
merge against the simple loop (`merge_parts`), the `re` pre-tokenizer against
`regex`, chunked encoding against pre-tokenizing the whole text, and all of
them against tiktoken where it is installed.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

import bpe.encode
import bpe.pretokenize
from bpe import CL100K_PATTERN, GPT2_PATTERN, Tokenizer
from bpe.encode import PieceEncoder, merge_long_parts, merge_parts
from bpe.pretokenize import CHUNKS, FAST_CHARS, SAFE_CUTS, compile_pattern, pretokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PATTERNS = [GPT2_PATTERN, CL100K_PATTERN]


def long_pieces(n: int) -> dict[str, str]:
    rng = random.Random(n)
    return {
        "one character": "a" * n,
        "two alternating": ("ab" * n)[:n],
        "random over 4 letters": "".join(rng.choice("acgt") for _ in range(n)),
        "random over 26 letters": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n)),
    }


def by_simple_loop(tok: Tokenizer, piece: str) -> list[int]:
    ranks = tok.mergeable_ranks()
    return [ranks[part] for part in merge_parts(piece.encode("utf-8"), ranks)]


@pytest.fixture(scope="module")
def letters() -> Tokenizer:
    """A small tokenizer that learned runs of letters, so long pieces merge in many rounds."""
    rng = random.Random(0)
    words = [c * rng.randint(1, 12) for c in "aabt"] + ["".join(rng.choices("acgt", k=rng.randint(2, 9))) for _ in range(300)]
    words += ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 7))) for _ in range(2000)]
    text = " ".join(rng.choice(words) for _ in range(20000)) + " " + "ab" * 40
    return Tokenizer.train(text, 256 + 600, progress=False)


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    files = DATA / "gpt2" / "encoder.json", DATA / "gpt2" / "vocab.bpe"
    if not all(f.is_file() for f in files):
        pytest.skip("the shared GPT-2 files are absent")
    return Tokenizer.from_gpt2(*files)


def tiktoken_oracle(tok: Tokenizer):
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding("local", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(), special_tokens={})


# ---------------------------------------------------------------- long pieces


def test_long_pieces_encode_as_the_simple_loop_does(letters):
    for name, piece in long_pieces(5000).items():
        assert letters.encode(piece) == by_simple_loop(letters, piece), name


def test_long_pieces_encode_as_tiktoken_does(letters):
    enc = tiktoken_oracle(letters)
    for n in (5000, 20000):
        for name, piece in long_pieces(n).items():
            assert letters.encode(piece) == enc.encode(piece), name


def test_long_gpt2_pieces_encode_as_the_simple_loop_and_tiktoken_do(gpt2):
    for name, piece in long_pieces(5000).items():
        assert gpt2.encode(piece) == by_simple_loop(gpt2, piece), name
    enc = tiktoken_oracle(gpt2)
    for name, piece in long_pieces(20000).items():
        assert gpt2.encode(piece) == enc.encode(piece), name
    text = "x = '" + "0123456789abcdef" * 2000 + "'\n" + " " * 3000 + "\n" + "🙂" * 3000
    assert gpt2.encode(text) == enc.encode(text)


@pytest.mark.slow
def test_20000_character_pieces_encode_as_the_simple_loop_does(gpt2):
    for name, piece in long_pieces(20000).items():
        assert gpt2.encode(piece) == by_simple_loop(gpt2, piece), name


def _random_ranks(rng: random.Random, alphabet: bytes, by_pair: bool) -> tuple[dict[bytes, int], dict | None]:
    """Token ids (and for `by_pair`, ranked merges) with no order to them: ranks
    unrelated to lengths, tokens no merge makes, merges ranked against their ids."""
    tokens = [bytes([c]) for c in alphabet]
    merges: dict[tuple[bytes, bytes], int] = {}
    for _ in range(rng.randint(1, 14)):
        if by_pair:
            left, right = rng.choice(tokens), rng.choice(tokens)
            merges.setdefault((left, right), len(merges))
            new = left + right
        else:
            new = bytes(rng.choice(alphabet) for _ in range(rng.randint(2, 5)))
        if new not in tokens:
            tokens.append(new)
    ids = list(range(len(tokens)))
    rng.shuffle(ids)
    return dict(zip(tokens, ids)), merges if by_pair else None


def test_long_path_equals_the_simple_loop_on_any_rank_table(monkeypatch):
    # Thousands of small random cases, because the orders of merges that make
    # a bulk round inexact (a new pair ranking below the round's) are rare.
    for seed in range(3000):
        rng = random.Random(seed)
        by_pair = seed % 2 == 1
        alphabet = rng.choice([b"ab", b"abc"])
        ids, merges = _random_ranks(rng, alphabet, by_pair)
        n = rng.randint(2, 60)
        piece = rng.choice([alphabet[:1] * n, (alphabet[:2] * n)[:n], bytes(rng.choice(alphabet) for _ in range(n))])
        # A share of 1 makes every round a bulk round, even on short pieces.
        monkeypatch.setattr(bpe.encode, "ROUND_MIN_SHARE", rng.choice([1, 2, 64]))
        ends = merge_long_parts(piece, ids, PieceEncoder(ids, merges).pair_rank)
        expected = merge_parts(piece, merges if by_pair else ids, by_pair)
        assert [piece[start:end] for start, end in zip([0, *ends], ends)] == expected, (seed, piece)


def test_long_pieces_are_not_cached(letters):
    tok = Tokenizer(letters.merges, letters.pattern)
    for text in ("b" * 5000, " x" + "c" * 5000 + "!", "c" * 5000 + " and more"):
        assert tok.encode(text) == by_simple_loop_text(letters, text)
    assert " and" in tok._text.cache and max(map(len, tok._text.cache)) <= bpe.encode.CACHE_MAX_CHARS


def test_the_cache_is_bounded(letters, monkeypatch):
    monkeypatch.setattr(bpe.encode, "CACHE_LIMIT", 50)
    tok = Tokenizer(letters.merges, letters.pattern)
    rng = random.Random(1)
    for _ in range(20):
        words = ["".join(rng.choices("abcdefgh", k=5)) for _ in range(40)]
        text = " ".join(words)
        assert tok.encode(text) == by_simple_loop_text(letters, text)
        assert len(tok._text.cache) <= 50 + 2 * len(words)  # emptied once past the limit, then one text's worth


def by_simple_loop_text(tok: Tokenizer, text: str) -> list[int]:
    return [i for piece in regex.findall(tok.pattern, text) for i in by_simple_loop(tok, piece)]


# ---------------------------------------------------------------- caching and chunks


def test_cold_warm_and_partly_warm_encodes_agree(letters):
    rng = random.Random(2)
    words = ["".join(rng.choices("abcdefgh ,.!\n", k=rng.randint(1, 8))) for _ in range(3000)]
    old_text = "".join(words[:2000])
    new_text = old_text[:5000] + "".join(words[2000:])  # known chunks first, then new ones
    tok = Tokenizer(letters.merges, letters.pattern)
    expected = by_simple_loop_text(letters, new_text)
    tok.encode(old_text)
    assert tok.encode(new_text) == expected  # mostly cached: chunk by chunk, encoding the misses
    assert tok.encode(new_text) == expected  # all cached
    assert Tokenizer(letters.merges, letters.pattern).encode(new_text) == expected  # cold: piece by piece


# ---------------------------------------------------------------- pre-tokenization

fast_text = st.text(
    st.one_of(st.sampled_from(FAST_CHARS), st.sampled_from("aaaa    \n\n\t'sSlLdDvVeErR123日本語🙂ж\u3000\x1c")),
    max_size=60,
)


@given(text=fast_text, pattern=st.sampled_from(PATTERNS), block=st.sampled_from([4, 16, 1 << 12]))
def test_fast_pretokenizer_finds_what_regex_finds(text, pattern, block):
    old = bpe.pretokenize.FAST_BLOCK_CHARS
    bpe.pretokenize.FAST_BLOCK_CHARS = block  # small blocks mix `re` and `regex` within one text
    try:
        assert pretokenizer(pattern)(text) == compile_pattern(pattern).findall(text)
    finally:
        bpe.pretokenize.FAST_BLOCK_CHARS = old


@pytest.mark.parametrize("pattern", PATTERNS)
def test_fast_pretokenizer_classifies_every_fast_character_as_regex_does(pattern):
    fast, findall = pretokenizer(pattern), compile_pattern(pattern).findall
    for c in FAST_CHARS:
        for text in (f"a{c}b", f"{c}{c} x", f" {c}1", f"x {c}", f"'{c}", f"{c}\n", f"1{c}{c}{c}2"):
            assert fast(text) == findall(text), repr(text)


@given(text=fast_text, pattern=st.sampled_from(sorted(bpe.pretokenize.CUTTABLE_PATTERNS)))
def test_chunks_and_pieces_pretokenize_alone_as_in_context(text, pattern):
    findall = compile_pattern(pattern).findall
    pieces = findall(text)
    assert CHUNKS.findall(text) == [chunk for chunk in SAFE_CUTS.split(text) if chunk]
    assert [p for chunk in CHUNKS.findall(text) for p in findall(chunk)] == pieces
    assert all(findall(piece) == [piece] for piece in pieces)


@pytest.mark.parametrize("name", sorted(bpe.pretokenize.NAMED_PATTERNS))
def test_named_patterns_match_every_character_and_have_no_group(name):
    # findall keeps only what matches: a named pattern must leave nothing out
    pattern = compile_pattern(bpe.pretokenize.NAMED_PATTERNS[name])
    everything = "".join(map(chr, [*range(0xD800), *range(0xE000, sys.maxunicode + 1, 7)]))
    assert pattern.groups == 0
    for start in range(0, len(everything), 1 << 16):
        block = everything[start : start + (1 << 16)]
        assert "".join(pattern.findall(block)) == block


def test_re_whitespace_includes_regex_whitespace():
    # SAFE_CUTS (module `re`) must only cut where `regex`'s \S precedes the space.
    everything = "".join(map(chr, [*range(0xD800), *range(0xE000, sys.maxunicode + 1)]))
    assert set(regex.findall(r"\s", everything)) <= set(re.findall(r"\s", everything))


def test_fast_pretokenizer_on_real_text():
    path = DATA / "gutenberg_classics.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    text = path.read_text(encoding="utf-8")[:2_000_000]
    for pattern in PATTERNS:
        assert pretokenizer(pattern)(text) == compile_pattern(pattern).findall(text)
