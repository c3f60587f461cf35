"""Tests for the byte-level BPE tokenizer in `bpe/`."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import bpe.encode
import bpe.pretokenize
from bpe import CL100K_PATTERN, GPT2_PATTERN, Tokenizer, TokenizerFileError
from bpe.naive import train_naive

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"shared data file {path} is absent")
    return path


# ---------------------------------------------------------------- strategies

# Arbitrary text without lone surrogates (those cannot be encoded; tested apart).
any_char = st.characters(blacklist_categories=("Cs",))
fragments = st.sampled_from(
    [
        "👨‍👩‍👧‍👦", "🏳️‍🌈", "👍🏽", "e\u0301", "日本語のテキスト", "中文", "한국어", "Ελληνικά", "Привет",
        "   ", "\t\t", "\n\n\n", "\r\n", " \n ", "\x00", "\x1b[0m", "\u00a0", "\u2028", "\u3000",
        "don't", "I'LL", "1234567", " 3.14", "<|endoftext|>", "<|endoftext", "hello", " world", "!!!",
    ]
)
texts = st.lists(st.one_of(st.text(any_char, max_size=12), fragments), max_size=12).map("".join)


def _random_corpus(seed: int, n_words: int) -> str:
    """A deterministic multilingual corpus, so merges involve multi-byte characters."""
    rng = random.Random(seed)
    syllables = ["th", "e", "an", "to", "ken", "iz", "er", "ü", "ber", "ca", "fé", "日", "本", "語", "🙂", "ï", "ve", "19", "'s"]
    seps = [" ", " ", " ", "\n", ", ", ".\n\n", "  ", "--"]
    return "".join(
        "".join(rng.choices(syllables, k=rng.randint(1, 4))) + rng.choice(seps) for _ in range(n_words)
    )


@pytest.fixture(scope="module")
def trained() -> Tokenizer:
    corpus = _random_corpus(0, 5000)
    if (DATA / "tinyshakespeare.txt").is_file():
        corpus += (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:200_000]
    return Tokenizer.train(corpus, 1200, special_tokens=["<|endoftext|>", "<|pad|>"], progress=False)


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return Tokenizer.from_gpt2(shared_file("gpt2", "encoder.json"), shared_file("gpt2", "vocab.bpe"))


def tiktoken_oracle(tok: Tokenizer):
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding(
        name="local", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(), special_tokens=tok.special_tokens
    )


# ---------------------------------------------------------------- training


@given(
    text=st.text(st.sampled_from("aaab  c\n\tédé🙂"), max_size=300),
    n_merges=st.integers(0, 40),
    pattern=st.sampled_from(["gpt2", "cl100k"]),
)
def test_fast_trainer_matches_naive_reference(text, n_merges, pattern):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small corpora run out of merges; that is fine here
        tok = Tokenizer.train(text, 256 + n_merges, pattern=pattern, progress=False)
    naive = train_naive(text, n_merges, bpe.pretokenize.NAMED_PATTERNS[pattern])
    assert tok.merges == naive
    assert tok.encode(text) == Tokenizer(naive, pattern).encode(text)


def test_fast_trainer_matches_naive_reference_on_real_text():
    text = _random_corpus(1, 600)
    assert Tokenizer.train(text, 256 + 120, progress=False).merges == train_naive(text, 120)



def test_training_invariants(trained):
    assert trained.vocab_size == 1200
    assert trained.special_tokens == {"<|endoftext|>": 1198, "<|pad|>": 1199}
    token_bytes = {i: b for b, i in trained.mergeable_ranks().items()}
    assert sorted(token_bytes) == list(range(1198))
    assert all(token_bytes[i] == bytes([i]) for i in range(256))
    for i, (left, right) in enumerate(trained.merges):
        assert token_bytes[256 + i] == token_bytes[left] + token_bytes[right]


def test_training_is_deterministic():
    text = _random_corpus(2, 3000)
    assert Tokenizer.train(text, 600, progress=False).merges == Tokenizer.train(text, 600, progress=False).merges


def test_training_on_a_path_equals_training_in_memory(tmp_path, monkeypatch):
    text = _random_corpus(3, 4000).replace("\n", "\r\n", 50) + "<|endoftext|>" + _random_corpus(4, 500)
    path = tmp_path / "corpus.txt"
    path.write_bytes(text.encode("utf-8"))
    in_memory = Tokenizer.train(text, 700, ["<|endoftext|>"], progress=False)
    monkeypatch.setattr(bpe.pretokenize, "CHUNK_CHARS", 97)  # force many chunk boundaries
    from_path = Tokenizer.train(path, 700, ["<|endoftext|>"], progress=False)
    from_documents = Tokenizer.train(iter([text]), 700, ["<|endoftext|>"], progress=False)
    assert from_path.merges == in_memory.merges == from_documents.merges


@given(text=texts, chunk=st.integers(1, 40), pattern=st.sampled_from([GPT2_PATTERN, CL100K_PATTERN]))
def test_streaming_chunks_pretokenize_like_the_whole_text(text, chunk, pattern):
    specials = frozenset(["<|endoftext|>"])
    whole = bpe.pretokenize.count_pretokens(text, pattern, specials)
    old = bpe.pretokenize.CHUNK_CHARS
    bpe.pretokenize.CHUNK_CHARS = chunk
    try:
        pieces = list(bpe.pretokenize.iter_texts(text, specials))
    finally:
        bpe.pretokenize.CHUNK_CHARS = old
    assert "".join(pieces) == text
    assert sum((bpe.pretokenize.count_pretokens(p, pattern, specials) for p in pieces), Counter()) == whole


def test_special_tokens_are_not_learned():
    tok = Tokenizer.train("<|endoftext|>" * 500 + " ab" * 10, 259, ["<|endoftext|>"], progress=False)
    assert len(tok.merges) == 2
    assert all(b"|" not in tok.decode_bytes([i]) for i in range(256, 256 + len(tok.merges)))


def test_zero_merges_is_a_byte_tokenizer():
    tok = Tokenizer.train("hello", 257, ["<|endoftext|>"], progress=False)
    assert tok.merges == [] and tok.vocab_size == 257 and tok.special_tokens == {"<|endoftext|>": 256}
    assert tok.encode("hé") == [104, 0xC3, 0xA9]
    assert Tokenizer(special_tokens=["<|endoftext|>"]).encode("<|endoftext|>", allowed_special="all") == [256]


def test_vocab_too_small_is_an_error():
    with pytest.raises(ValueError, match="too small"):
        Tokenizer.train("hello", 256, ["<|endoftext|>"])


def test_too_small_corpus_warns_with_the_number_of_merges():
    with pytest.warns(UserWarning, match="only 3 merges were possible"):
        tok = Tokenizer.train("abcd", 1000, ["<|endoftext|>"], progress=False)
    assert tok.vocab_size == 256 + 3 + 1 and tok.special_tokens == {"<|endoftext|>": 259}


def test_invalid_pattern_is_an_error():
    with pytest.raises(ValueError, match="pattern"):
        Tokenizer.train("hello", 300, pattern="(unclosed")


# ---------------------------------------------------------------- encoding and decoding


@given(text=texts)
def test_decode_encode_round_trip(trained, text):
    assert trained.decode(trained.encode(text, allowed_special="none")) == text
    assert trained.decode(trained.encode(text, allowed_special="all")) == text


@given(batch=st.lists(texts, min_size=1, max_size=20), pattern=st.sampled_from(["gpt2", "cl100k", "o200k"]))
def test_encode_equals_tiktoken(trained, batch, pattern):
    tok = Tokenizer(trained.merges, pattern, trained.special_tokens)
    enc = tiktoken_oracle(tok)
    for text in batch:
        assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
        assert tok.encode(text, allowed_special="none") == enc.encode(text, disallowed_special=())


def test_encode_equals_tiktoken_on_real_text(trained):
    text = shared_file("tinyshakespeare.txt").read_text(encoding="utf-8")[-300_000:]
    assert trained.encode(text) == tiktoken_oracle(trained).encode(text)


def test_special_tokens_follow_tiktoken(trained):
    eot, pad = trained.special_tokens["<|endoftext|>"], trained.special_tokens["<|pad|>"]
    text = "a<|endoftext|>b<|pad|>"
    with pytest.raises(ValueError, match="special token '<\\|endoftext\\|>'"):
        trained.encode(text)
    with pytest.raises(ValueError, match="<\\|pad\\|>"):
        trained.encode(text, allowed_special={"<|endoftext|>"})
    assert trained.encode(text, allowed_special="all") == [ord("a"), eot, ord("b"), pad]
    assert eot not in trained.encode(text, allowed_special="none")
    # as in tiktoken: an allowed name the tokenizer lacks is ignored, a disallowed one is still searched for
    assert trained.encode("a<|nope|>", allowed_special={"<|nope|>"}, disallowed_special=()) == trained.encode_ordinary("a<|nope|>")
    with pytest.raises(ValueError, match="nope"):
        trained.encode("a<|nope|>", disallowed_special={"<|nope|>"})


def test_lone_surrogates_in_a_corpus_are_an_error():
    with pytest.raises(ValueError, match="surrogate"):
        Tokenizer.train("abc \udfff", 300, progress=False)


def test_decode_replaces_invalid_utf8_and_decode_bytes_keeps_it(trained):
    assert trained.decode([0xC3]) == "\ufffd"
    assert trained.decode_bytes([0xC3]) == b"\xc3"
    assert trained.decode([0xC3, 0xA9]) == "é"


def test_id_out_of_range_is_an_error(trained):
    for bad in (trained.vocab_size, -1, 10**9):
        with pytest.raises(ValueError, match="out of range"):
            trained.decode([1, bad])


def test_encode_batch_keeps_order_in_parallel(trained, monkeypatch):
    batch = [_random_corpus(seed, 50) for seed in range(30)]
    monkeypatch.setattr(bpe.encode, "PARALLEL_MIN_CHARS", 0)
    assert trained.encode_batch(batch, workers=2) == [trained.encode(t) for t in batch]
    with pytest.raises(ValueError, match="special token"):
        trained.encode_batch(["x<|pad|>"] * 3, workers=2)


# ---------------------------------------------------------------- GPT-2


def test_gpt2_known_ids(gpt2):
    encoder = json.loads(shared_file("gpt2", "encoder.json").read_text(encoding="utf-8"))
    assert gpt2.vocab_size == 50257 and gpt2.special_tokens == {"<|endoftext|>": 50256}
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode("hello world") == [31373, 995]
    assert gpt2.encode(" the") == [encoder["Ġthe"]]
    assert gpt2.encode("\n\n") == [encoder["ĊĊ"]]
    assert gpt2.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert gpt2.encode("<|endoftext|>", allowed_special="none") == [27, 91, 437, 1659, 5239, 91, 29]


def test_gpt2_matches_tiktoken(gpt2):
    enc = tiktoken_oracle(gpt2)
    strings = [
        "Hello, world! It's 2024 -- isn't it?",
        "  leading spaces\tand\ttabs\n\n\nnewlines   ",
        "日本語のテキスト 👨‍👩‍👧‍👦 café naïve",
        "def f(x):\n    return x ** 2  # comment\n",
        "I'll've we'RE you'd <|endoftext|> end",
        "\x00\x01 control \u2028 chars \u00a0 nbsp",
        "",
    ]
    for text in strings:
        assert gpt2.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    text = shared_file("the-verdict.txt").read_text(encoding="utf-8")
    assert gpt2.encode(text) == enc.encode(text)


# ---------------------------------------------------------------- files


def test_save_load_round_trip(trained, gpt2, tmp_path):
    for tok in (trained, gpt2):
        path = tmp_path / "tok.bpe"
        tok.save(path)
        loaded = Tokenizer.load(path)
        assert loaded.merges == tok.merges
        assert loaded.pattern == tok.pattern and loaded.special_tokens == tok.special_tokens
        assert loaded.mergeable_ranks() == tok.mergeable_ranks()
        text = "Round trip <|endoftext|> ünïcödé"
        assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    assert [p.name for p in tmp_path.iterdir()] == ["tok.bpe"]  # no temp files left behind


def test_corrupted_or_foreign_files_are_an_error(trained, tmp_path):
    path = tmp_path / "tok.bpe"
    trained.save(path)
    header, body = path.read_bytes().split(b"\n", 1)
    bad = {
        "truncated": header + b"\n" + body[: len(body) // 2],
        "edited": header + b"\n" + body.replace(b"1", b"2", 1),
        "empty": b"",
        "binary": bytes(range(256)),
        "other json": b'{"hello": "world"}\n',
        "future version": header.replace(b'"version": 1', b'"version": 99') + b"\n" + body,
    }
    for name, content in bad.items():
        path.write_bytes(content)
        with pytest.raises(TokenizerFileError):
            Tokenizer.load(path)
    with pytest.raises(TokenizerFileError, match="not a bpe-tokenizer file"):
        Tokenizer.load(shared_file("gpt2", "vocab.bpe"))


def test_a_consistent_file_with_impossible_content_is_an_error(trained, tmp_path):
    # the checksum and counts agree, but a merge or the byte order cannot be
    path = tmp_path / "tok.bpe"
    trained.save(path)
    header, body = path.read_bytes().split(b"\n", 1)
    meta = json.loads(header)
    lines = body.decode().splitlines()
    future = ("\n".join([f"{256 + len(lines)} 1"] + lines[1:]) + "\n").encode()
    cases = {
        "refers to an id that does not exist yet": (dict(meta, sha256=hashlib.sha256(future).hexdigest()), future),
        "byte_order must list each of the 256 byte values once": (dict(meta, byte_order=[0] * 256), body),
        "not iterable": (dict(meta, byte_order=5), body),
    }
    for message, (head, merges) in cases.items():
        path.write_bytes(json.dumps(head).encode() + b"\n" + merges)
        with pytest.raises(TokenizerFileError, match=message):
            Tokenizer.load(path)


# ---------------------------------------------------------------- command line


def _cli(*args: str, stdin: bytes = b"") -> bytes:
    done = subprocess.run(
        [sys.executable, "-m", "bpe", *args], input=stdin, capture_output=True, cwd=REPO, timeout=60, check=True
    )
    return done.stdout


def test_cli_round_trip(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(_random_corpus(5, 2000), encoding="utf-8")
    out = tmp_path / "tok.bpe"
    _cli("train", "--input", str(corpus), "--vocab-size", "400", "--out", str(out), "--special", "<|endoftext|>")
    assert Tokenizer.load(out).vocab_size == 400
    text = "the naïve tokenizer 🙂\n<|endoftext|>"
    ids = _cli("encode", "--tokenizer", str(out), "--allow-special", stdin=text.encode())
    assert _cli("decode", "--tokenizer", str(out), stdin=ids) == text.encode()
    failed = subprocess.run(
        [sys.executable, "-m", "bpe", "decode", "--tokenizer", str(out)], input=b"99999", capture_output=True, cwd=REPO
    )
    assert failed.returncode == 1 and b"out of range" in failed.stderr


def test_cli_special_token_error_names_the_cli_flag(tmp_path):
    out = tmp_path / "tok.bpe"
    Tokenizer(special_tokens=["<|endoftext|>"]).save(out)
    failed = subprocess.run(
        [sys.executable, "-m", "bpe", "encode", "--tokenizer", str(out)],
        input=b"a <|endoftext|> b", capture_output=True, cwd=REPO,
    )
    assert failed.returncode == 1
    assert b"--allow-special" in failed.stderr and b"allowed_special" not in failed.stderr


def test_readme_tokenizer_commands_work_as_written(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## bpe") :]
    block = section[section.index("```bash\n") + len("```bash\n") : section.index("```", section.index("```bash\n") + 7)]
    commands = [line for line in block.splitlines() if line.strip()]
    assert commands and all("python -m bpe" in line for line in commands)
    (tmp_path / "corpus.txt").write_text(_random_corpus(6, 3000) + "Hello world\n", encoding="utf-8")
    # `python` in the commands is this interpreter, importing this checkout
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr.decode())
        outputs.append(done.stdout)
    assert outputs[-1] == b"Hello world\n"  # encode | decode gives the text back
    ids = [int(i) for i in outputs[-2].split()]
    assert Tokenizer.load(tmp_path / "tok.bpe").decode(ids) == "Hello world\n"
