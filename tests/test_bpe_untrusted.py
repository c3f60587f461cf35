"""Tokenizer files and inputs as an attacker or a careless user gives them (issue 22's bpe cases).

Each case is refused with one clear error before any long work or large
allocation, or, for a pattern that skips text, the text is kept and a
warning says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import bpe.pretokenize
from bpe import Tokenizer, TokenizerFileError

REPO = Path(__file__).resolve().parents[1]


def _write_bpe_file(path: Path, merges: list[tuple[int, int]], **header) -> Path:
    body = "".join(f"{left} {right}\n" for left, right in merges).encode()
    meta = {"format": "bpe-tokenizer", "version": 1, "pattern": bpe.pretokenize.GPT2_PATTERN, "special_tokens": {},
            "byte_order": None, "merges": len(merges), "sha256": hashlib.sha256(body).hexdigest(), **header}  # fmt: skip
    path.write_bytes(json.dumps(meta).encode() + b"\n" + body)
    return path


def test_merges_that_keep_doubling_a_token_are_refused_before_building(tmp_path):
    # merge i joins token 255 + i to itself: 40 short lines would define a token of 2**40 bytes
    merges = [(97, 97)] + [(256 + i, 256 + i) for i in range(39)]
    path = _write_bpe_file(tmp_path / "doubling.bpe", merges)
    assert path.stat().st_size < 1000
    start = time.perf_counter()
    with pytest.raises(TokenizerFileError, match=r"doubling.bpe: .*40 merges define tokens of more than .* bytes in all"):
        Tokenizer.load(path)
    assert time.perf_counter() - start < 5  # refused from the numbers, nothing built (a generous bound, not a timing test)


def test_a_trained_tokenizer_is_far_within_the_token_byte_bound(tmp_path):
    text = "a" * 100_000 + " the cat" * 1000  # a long run doubles tokens too, as training does
    tok = Tokenizer.train(text, 280, progress=False)
    tok.save(tmp_path / "t.bpe")
    assert Tokenizer.load(tmp_path / "t.bpe").encode("a" * 5000) == tok.encode("a" * 5000)


def test_special_ids_far_past_the_vocabulary_are_refused(tmp_path):
    path = _write_bpe_file(tmp_path / "huge.bpe", [(97, 98)], special_tokens={"<|x|>": 10**12})
    with pytest.raises(TokenizerFileError, match="special token ids must be distinct and between 257"):
        Tokenizer.load(path)


def test_a_pattern_that_skips_characters_loses_no_text_and_says_so():
    text = "Hello, world! 1+1=2"
    with pytest.warns(UserWarning, match="does not match every character"):
        tok = Tokenizer(pattern=r"\p{L}+|\p{N}+")
    assert tok.decode(tok.encode(text)) == text  # it was 'Helloworld112'
    with pytest.warns(UserWarning, match="does not match every character"):
        trained = Tokenizer.train(text * 50, 270, pattern=r"\p{L}+", progress=False)
    assert trained.decode(trained.encode(text)) == text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pattern that matches everything says nothing
        grouped = Tokenizer(pattern=r"(\p{L}+)|\s+|[^\s\p{L}]+")
    assert grouped.decode(grouped.encode(text)) == text  # a capturing group changes nothing


def test_the_unicode_version_is_recorded_and_a_different_one_warns(tmp_path):
    tok = Tokenizer.train("some text to train on " * 20, 270, progress=False)
    assert tok.unicode_version == bpe.pretokenize.unicode_version()
    tok.save(tmp_path / "t.bpe")
    header = json.loads((tmp_path / "t.bpe").read_bytes().split(b"\n", 1)[0])
    assert header["unicode"] == tok.unicode_version
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Tokenizer.load(tmp_path / "t.bpe").unicode_version == tok.unicode_version
    merges = [tuple(map(int, line.split())) for line in (tmp_path / "t.bpe").read_text().splitlines()[1:]]
    old = _write_bpe_file(tmp_path / "old.bpe", merges, unicode="9.0")
    with pytest.warns(UserWarning, match=r"old.bpe was trained under Unicode 9.0, but this `regex` has Unicode"):
        Tokenizer.load(old)


def test_unicode_version_knows_this_regex():
    version = bpe.pretokenize.unicode_version()
    assert tuple(map(int, version.split("."))) >= (13, 0)
    newest_char = dict(bpe.pretokenize.UNICODE_FIRSTS)[version]
    assert bpe.pretokenize.compile_pattern(r"\p{L}").match(chr(newest_char))


def test_a_truncated_encoder_json_names_the_file(tmp_path):
    encoder = tmp_path / "encoder.json"
    encoder.write_text('{"!": 0, "\\"": 1, "#', encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=r"encoder.json: not a JSON file, truncated or corrupted\? \(Unterminated string"):
        Tokenizer.from_gpt2(encoder, tmp_path / "vocab.bpe")


def _bpe_cli(*args: str, stdin: bytes = b"", cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout, from any folder
    return subprocess.run([sys.executable, "-m", "bpe", *args], input=stdin, capture_output=True, cwd=cwd, env=env, timeout=60)


def test_cli_decode_names_a_token_that_is_not_a_number(tmp_path):
    Tokenizer().save(tmp_path / "t.bpe")
    done = _bpe_cli("decode", "--tokenizer", str(tmp_path / "t.bpe"), stdin=b"104 105 hi 33")
    assert done.returncode == 1 and b"token 3 on stdin is 'hi', not a token id" in done.stderr
    assert b"Traceback" not in done.stderr


@pytest.mark.parametrize(
    "out, message",
    [("", b"--out is empty"), (".", b"is a folder"), ("no/such/folder/t.bpe", b"the folder no/such/folder does not exist")],
)
def test_cli_train_checks_out_before_training(tmp_path, out, message):
    # the input does not exist: an error about --out shows it was checked first
    done = _bpe_cli("train", "--input", "missing.txt", "--vocab-size", "300", "--out", out, cwd=tmp_path)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
