"""tiktoken's `Encoding` API on `bpe.Tokenizer`, and any tiktoken encoding from its ranks.

tiktoken is the oracle where it is installed (built from the same ranks,
pattern and special tokens, which it does without any network); the tests
that need it skip without it. GPT-2's ranks come from ../shared/data/gpt2.
"""

from __future__ import annotations

import base64
import multiprocessing
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpe import CL100K_PATTERN, GPT2_PATTERN, O200K_PATTERN, Tokenizer, TokenizerFileError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPECIALS = {"<|endoftext|>": 1000, "<|fim_prefix|>": 1001, "<|endofprompt|>": 1019}  # a gap, as in cl100k

texts = st.lists(
    st.one_of(
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
        st.sampled_from(["hello", " world", "  \n\n ", "don't", "I'LL", "12345", "HTTPServer", "camelCase", "a/b\n",
                         "café", "🙂", "<|endoftext|>", "<|endofprompt|>", "\u3000\x1c\x85", "e\u0301"]),
    ),
    max_size=10,
).map("".join)


def _corpus(seed: int, n: int) -> str:
    """n random words of multilingual syllables, so merges involve multi-byte characters."""
    rng = random.Random(seed)
    syllables = ["th", "e", "an", "to", "ken", "iz", "er", "ü", "ber", "ca", "fé", "日", "本", "🙂", "ve", "19", "'s", "HT", "Se"]
    seps = [" ", " ", " ", "\n", ", ", ".\n\n", "  ", "--", "/"]
    return "".join("".join(rng.choices(syllables, k=rng.randint(1, 4))) + rng.choice(seps) for _ in range(n))


@pytest.fixture(scope="module")
def ranks() -> dict[bytes, int]:
    """The ranks of a small trained tokenizer: 1000 tokens (ids 0-999)."""
    return Tokenizer.train(_corpus(0, 20000), 1000, progress=False).mergeable_ranks()


@pytest.fixture(scope="module")
def tok(ranks) -> Tokenizer:
    return Tokenizer.from_tiktoken(ranks, "cl100k", SPECIALS, name="small")


def oracle(tok: Tokenizer):
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding(tok.name, pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(), special_tokens=tok.special_tokens)


@pytest.fixture(scope="module")
def gpt2_ranks() -> dict[bytes, int]:
    files = DATA / "gpt2" / "encoder.json", DATA / "gpt2" / "vocab.bpe"
    if not all(f.is_file() for f in files):
        pytest.skip("the shared GPT-2 files are absent")
    return Tokenizer.from_gpt2(*files).mergeable_ranks()


# ---------------------------------------------------------------- the Encoding API, name by name


def test_attributes_are_tiktokens(tok):
    enc = oracle(tok)
    assert tok.name == enc.name == "small"
    assert tok.n_vocab == enc.n_vocab == 1020 == tok.vocab_size
    assert tok.max_token_value == enc.max_token_value == 1019
    assert tok.eot_token == enc.eot_token == 1000
    assert tok.special_tokens_set == enc.special_tokens_set == set(SPECIALS)
    for token in (0, 999, 1000, 1019, 1005):
        assert tok.is_special_token(token) == enc.is_special_token(token)
    assert tok.token_byte_values() == enc.token_byte_values()
    with pytest.raises(KeyError):
        Tokenizer().eot_token


def test_encode_follows_tiktoken_special_token_rules(tok):
    enc = oracle(tok)
    text = "a<|endoftext|> b<|endofprompt|>c <|nope|>"
    for kwargs in [
        {"allowed_special": "all"},
        {"disallowed_special": ()},
        {"allowed_special": {"<|endoftext|>"}, "disallowed_special": ()},
        {"allowed_special": {"<|endoftext|>", "<|endofprompt|>", "<|nope|>"}},  # a name it lacks is ignored
        {"allowed_special": "all", "disallowed_special": ()},
    ]:
        assert tok.encode(text, **kwargs) == enc.encode(text, **kwargs), kwargs
        assert tok.encode_to_numpy(text, **kwargs).tolist() == enc.encode_to_numpy(text, **kwargs).tolist()
    for kwargs in [{}, {"allowed_special": {"<|endoftext|>"}}, {"disallowed_special": {"<|nope|>"}},
                   {"allowed_special": "all", "disallowed_special": {"<|endoftext|>"}}]:  # fmt: skip
        with pytest.raises(ValueError):
            enc.encode(text, **kwargs)
        with pytest.raises(ValueError, match="special token"):
            tok.encode(text, **kwargs)
    assert tok.encode(text, allowed_special="none") == enc.encode_ordinary(text) == tok.encode_ordinary(text)
    assert tok.encode_to_numpy("hello").dtype == np.uint32


def test_batches_are_tiktokens(tok):
    enc = oracle(tok)
    batch = [_corpus(seed, 40) + "<|endoftext|>" for seed in range(6)]
    assert tok.encode_batch(batch, allowed_special="all", num_threads=2) == enc.encode_batch(batch, allowed_special="all")
    assert tok.encode_batch(batch, disallowed_special=()) == enc.encode_batch(batch, disallowed_special=())
    assert tok.encode_ordinary_batch(batch, num_threads=3) == enc.encode_ordinary_batch(batch)
    ids = enc.encode_batch(batch, allowed_special="all")
    assert tok.decode_batch(ids, num_threads=2) == enc.decode_batch(ids) == batch
    assert tok.decode_bytes_batch(ids) == enc.decode_bytes_batch(ids)
    with pytest.raises(ValueError, match="special token"):
        tok.encode_batch(batch)


def test_single_tokens_and_decoding_are_tiktokens(tok):
    enc = oracle(tok)
    for key in ["th", b" ken", "<|endoftext|>", b"<|endofprompt|>", "a", "日"]:
        assert tok.encode_single_token(key) == enc.encode_single_token(key)
    for missing in ["not a token at all", b"\xff\xfe"]:
        with pytest.raises(KeyError):
            enc.encode_single_token(missing)
        with pytest.raises(KeyError):
            tok.encode_single_token(missing)
    ids = enc.encode("Hello café 🙂 world<|endoftext|>", allowed_special="all")
    assert tok.decode(ids) == enc.decode(ids) and tok.decode_bytes(ids) == enc.decode_bytes(ids)
    assert tok.decode_tokens_bytes(ids) == enc.decode_tokens_bytes(ids)
    assert [tok.decode_single_token_bytes(i) for i in ids] == [enc.decode_single_token_bytes(i) for i in ids]
    for token in (1005, 5000):  # a gap among the specials, and past the end
        with pytest.raises(KeyError):
            enc.decode_single_token_bytes(token)
        with pytest.raises(KeyError, match="out of range"):
            tok.decode_single_token_bytes(token)
        with pytest.raises(ValueError, match="out of range"):
            tok.decode([1, token])


@given(text=texts)
def test_decode_with_offsets_is_tiktokens(tok, text):
    enc = oracle(tok)
    ids = enc.encode(text, allowed_special="all")
    assert tok.decode_with_offsets(ids) == enc.decode_with_offsets(ids)


def test_decode_with_offsets_inside_a_character(tok):
    # "é" is two bytes; split over two tokens, both start at its index
    ids = [tok.encode_single_token(b"a"), tok.encode_single_token(b"\xc3"), tok.encode_single_token(b"\xa9"), tok.encode_single_token(b"b")]
    assert tok.decode_with_offsets(ids) == ("aéb", [0, 1, 1, 2])


# ---------------------------------------------------------------- surrogates


@pytest.mark.parametrize(
    "text, same_as",
    [
        ("ok \ud83d\ude42 ok", "ok 🙂 ok"),  # a pair written as two code units is the character
        ("ok \ud800 not ok", "ok \ufffd not ok"),  # a lone one is U+FFFD
        ("\udfff", "\ufffd"),
        ("x\ud83d", "x\ufffd"),
        ("a\ud83d\ude42<|endoftext|>\ud800", "a🙂<|endoftext|>\ufffd"),
    ],
)
def test_surrogates_encode_as_tiktoken_encodes_them(tok, text, same_as):
    assert tok.encode(text, allowed_special="all") == tok.encode(same_as, allowed_special="all")
    assert tok.encode_ordinary(text) == tok.encode_ordinary(same_as)
    enc = oracle(tok)
    assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)


def test_encode_of_bytes_is_a_clear_type_error(tok):
    for call in (tok.encode, tok.encode_ordinary, tok.encode_to_numpy):
        with pytest.raises(TypeError, match="got bytes: decode the bytes first"):
            call(b"hello")
    with pytest.raises(TypeError, match="got int"):
        tok.encode_batch(["fine", 3])


# ---------------------------------------------------------------- pickling


def _encode_in_child(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, allowed_special="all")


def test_a_tokenizer_pickles_without_its_caches(tok):
    tok.encode(_corpus(1, 500))  # warm the cache
    copy = pickle.loads(pickle.dumps(tok))
    assert copy._text.cache == {}
    text = _corpus(2, 300) + "<|endofprompt|>"
    assert copy.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    assert (copy.name, copy.special_tokens, copy.pattern) == (tok.name, tok.special_tokens, tok.pattern)


def test_a_tokenizer_crosses_a_spawn_pool(tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    hf = Tokenizer.train(_corpus(3, 3000), 400, ["<|endoftext|>"], progress=False)
    hf.save_hf(path)
    texts = [_corpus(seed, 100) + "<|endoftext|>" for seed in range(4)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        for each in (tok, Tokenizer.from_hf(path)):
            assert pool.starmap(_encode_in_child, [(each, text) for text in texts]) == [_encode_in_child(each, t) for t in texts]


# ---------------------------------------------------------------- any encoding from ranks


def test_from_tiktoken_keeps_the_special_ids_through_save_and_load(tok, tmp_path):
    assert tok.encode("x<|endofprompt|>", allowed_special="all")[-1] == 1019
    tok.save(tmp_path / "small.bpe")
    back = Tokenizer.load(tmp_path / "small.bpe")
    assert back.special_tokens == SPECIALS and back.name == "small" and back.mergeable_ranks() == tok.mergeable_ranks()
    with pytest.raises(ValueError, match="leave gaps"):
        tok.save_hf(tmp_path / "tokenizer.json")


def _write_rank_file(path: Path, ranks: dict[bytes, int]) -> Path:
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for t, r in sorted(ranks.items(), key=lambda kv: kv[1])))
    return path


def test_load_tiktoken_reads_a_rank_file_written_from_gpt2s_ranks(gpt2_ranks, tmp_path):
    path = _write_rank_file(tmp_path / "r50k_base.tiktoken", gpt2_ranks)
    tok = Tokenizer.load_tiktoken(path)  # tiktoken's own file name: its pattern and specials
    gpt2 = Tokenizer.from_gpt2(DATA / "gpt2" / "encoder.json", DATA / "gpt2" / "vocab.bpe")
    assert tok.name == "r50k_base" and tok.special_tokens == {"<|endoftext|>": 50256} and tok.pattern == GPT2_PATTERN
    text = (DATA / "the-verdict.txt").read_text(encoding="utf-8")[:20000] + "<|endoftext|>"
    assert tok.encode(text, allowed_special="all") == gpt2.encode(text, allowed_special="all")
    assert tok.encode("Hello world") == [15496, 995]
    other = Tokenizer.load_tiktoken(_write_rank_file(tmp_path / "mine.tiktoken", gpt2_ranks), pattern="o200k",
                                    special_tokens={"<|eot|>": 50300})  # fmt: skip
    assert other.pattern == O200K_PATTERN and other.name == "mine" and other.n_vocab == 50301
    with pytest.raises(ValueError, match="pass pattern="):
        Tokenizer.load_tiktoken(tmp_path / "mine.tiktoken")


@given(text=texts, pattern=st.sampled_from(["gpt2", "cl100k", "o200k"]))
def test_encode_equals_tiktoken_for_each_pattern_over_gpt2_ranks(gpt2_ranks, text, pattern):
    tok = _gpt2_with(gpt2_ranks, pattern)
    enc = oracle(tok)
    assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)


_GPT2_WITH: dict[str, Tokenizer] = {}


def _gpt2_with(ranks: dict[bytes, int], pattern: str) -> Tokenizer:
    if pattern not in _GPT2_WITH:
        _GPT2_WITH[pattern] = Tokenizer.from_tiktoken(ranks, pattern, {"<|endoftext|>": 50256}, name=f"gpt2-{pattern}")
    return _GPT2_WITH[pattern]


def test_each_pattern_on_real_text_equals_tiktoken(gpt2_ranks):
    text = (DATA / "the-verdict.txt").read_text(encoding="utf-8")
    for pattern in ("gpt2", "cl100k", "o200k"):
        tok = _gpt2_with(gpt2_ranks, pattern)
        assert tok.encode(text) == oracle(tok).encode(text), pattern


def test_the_named_patterns_are_tiktokens(monkeypatch):
    pytest.importorskip("tiktoken")
    from tiktoken_ext import openai_public

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: {})  # no download
    assert openai_public.r50k_base()["pat_str"] == GPT2_PATTERN
    assert openai_public.cl100k_base()["pat_str"] == CL100K_PATTERN
    assert openai_public.o200k_base()["pat_str"] == O200K_PATTERN
    from bpe.ranks import TIKTOKEN_ENCODINGS

    for name, (_, specials) in TIKTOKEN_ENCODINGS.items():
        assert getattr(openai_public, name)()["special_tokens"] == specials, name


def _bytes_tokens(extra: dict[bytes, int]) -> dict[bytes, int]:
    return {bytes([b]): b for b in range(256)} | extra


@pytest.mark.parametrize(
    "ranks, message",
    [
        (_bytes_tokens({b"abc": 256}), "b'abc' of rank 256 is not two lower-ranked tokens joined"),
        (_bytes_tokens({b"ab": 257, b"abc": 256}), "b'abc' of rank 256 is not two lower-ranked"),
        (_bytes_tokens({b"ab": 256, b"bc": 256}), "rank 256 is given to two tokens"),
        (_bytes_tokens({b"ab": 256, b"bc": 258}), "has rank 258, but 258 tokens must have the ranks 0 to 257"),
        ({bytes([b]): b for b in range(255)}, "rank 255 is missing"),
        ({**_bytes_tokens({}), b"a": 256, b"ab": 97}, "rank 97 holds b'ab'"),
        (_bytes_tokens({"ab": 256}), "non-empty bytes"),
    ],
)
def test_ranks_that_are_not_a_byte_level_bpe_are_one_clear_error(ranks, message):
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_tiktoken(ranks, "gpt2")


def test_special_ids_must_be_free(ranks):
    with pytest.raises(ValueError, match="special token '<.x.>' has id 5; ids 0-999 are the merges' tokens"):
        Tokenizer.from_tiktoken(ranks, "gpt2", {"<|x|>": 5})
    with pytest.raises(ValueError, match="share an id"):
        Tokenizer.from_tiktoken(ranks, "gpt2", {"<|x|>": 1000, "<|y|>": 1000})


def test_a_malformed_rank_file_names_the_line(tmp_path):
    good = base64.b64encode(b"a").decode()
    for content, message in [
        (f"{good} 0\nnot-base64! 1\n", ":2: expected a base64 token"),
        (f"{good} 0\n{good} 1\n", ":2: token b'a' is listed twice .first on line 1"),
        (f"{good} zero\n", ":1: expected"),
        (f"{good}\n", ":1: expected"),
    ]:
        path = tmp_path / "bad.tiktoken"
        path.write_text(content)
        with pytest.raises(TokenizerFileError, match=message):
            Tokenizer.load_tiktoken(path, pattern="gpt2")
    path.write_bytes(b"".join(base64.b64encode(bytes([b])) + b" %d\n" % b for b in range(256)) + base64.b64encode(b"xyz") + b" 256\n")
    with pytest.raises(TokenizerFileError, match="bad.tiktoken: token b'xyz' of rank 256 is not two"):
        Tokenizer.load_tiktoken(path, pattern="gpt2")


def test_the_readme_line_runs_as_written(gpt2_ranks):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### tiktoken's API on bpe.Tokenizer") :]
    command = section[section.index("```bash\n") + 8 : section.index("\n```", section.index("```bash\n"))]
    env = {**os.environ, "PYTHONPATH": str(repo), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", command], cwd=repo, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    # GPT-2's ids for "Hello", " <", and "|endoftext|>" as plain text (tiktoken's docs give the last seven)
    assert done.stdout.decode().split() == "[15496, 1279, 91, 437, 1659, 5239, 91, 29] 50256 50257".split()


def test_only_characters_newer_than_tiktokens_unicode_split_differently():
    # "a" + a letter is one pre-token, so its first two bytes merge; "a" + an unknown character is two
    from bpe.pretokenize import UNICODE_FIRSTS, compile_pattern

    ranks = {bytes([b]): b for b in range(256)} | {b"a\xf0": 256}
    tok = Tokenizer.from_tiktoken(ranks, "gpt2")
    enc = oracle(tok)
    letter = compile_pattern(r"\p{L}").match
    for version, char in UNICODE_FIRSTS:
        text = "a" + chr(char)
        if tuple(map(int, version.split("."))) <= (16, 0):  # the Unicode of tiktoken 0.14's Rust regex
            assert tok.encode(text) == enc.encode(text) == [256, *text.encode()[2:]], version
        elif tok.encode(text) != enc.encode(text):
            assert letter(chr(char)) and enc.encode(text) == list(text.encode()), version


@given(text=texts, pattern=st.sampled_from(["gpt2", "cl100k"]))
def test_encode_with_unstable_is_tiktokens(ranks, text, pattern):
    tok = _small_with(ranks, pattern)
    enc = oracle(tok)
    stable, completions = tok.encode_with_unstable(text, allowed_special="all")
    their_stable, their_completions = enc.encode_with_unstable(text, allowed_special="all")
    assert stable == their_stable
    assert sorted(map(tuple, completions)) == sorted(map(tuple, their_completions))
    assert text.encode("utf-8").startswith(tok.decode_bytes(stable))


_SMALL_WITH: dict[str, Tokenizer] = {}


def _small_with(ranks: dict[bytes, int], pattern: str) -> Tokenizer:
    if pattern not in _SMALL_WITH:
        _SMALL_WITH[pattern] = Tokenizer.from_tiktoken(ranks, pattern, SPECIALS, name=f"small-{pattern}")
    return _SMALL_WITH[pattern]


def test_encode_with_unstable_on_tiktokens_example(gpt2_ranks):
    tok = _gpt2_with(gpt2_ranks, "gpt2")
    stable, completions = tok.encode_with_unstable("hello fanta")
    assert stable == [31373]
    assert all(tok.decode_bytes(stable + seq).startswith(b"hello fanta") for seq in completions)
    assert sorted(map(tuple, completions)) == sorted(map(tuple, oracle(tok).encode_with_unstable("hello fanta")[1]))
