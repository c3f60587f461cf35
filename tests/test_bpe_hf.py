"""Tests for Hugging Face tokenizer.json files: `Tokenizer.from_hf`, `save_hf`, `load`.

The files are written in-test as plain JSON. The expected ids come from the
files themselves (small cases worked out by hand) or from `tokenizers`, the
library that defines the format, where it is installed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpe import CL100K_PATTERN, Tokenizer, TokenizerFileError
from bpe.gpt2 import byte_to_char

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHOW = byte_to_char()  # byte -> the character tokenizer.json files write it as
BYTES = {SHOW[b]: b for b in range(256)}  # a vocab of the 256 bytes, id = byte

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}

texts = st.lists(
    st.one_of(
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
        st.sampled_from(["hello", " world", "  \n\n ", "don't", "I'LL", "12345", "e\u0301", "café", "🙂", "<|eot|>", "\u3000\x1c\x85"]),
    ),
    max_size=10,
).map("".join)


def split(regex: str) -> dict:
    """Llama 3's and Qwen2's pre-tokenizer: a Split regex, then bytes as characters."""
    byte_level = {**BYTE_LEVEL, "use_regex": False}
    split_step = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    return {"type": "Sequence", "pretokenizers": [split_step, byte_level]}


def write_json(
    path: Path,
    merges: list,
    vocab: dict[str, int] | None = None,
    pre_tokenizer: dict | None = None,
    added: dict[str, int] | None = None,
    normalizer: dict | None = None,
    **model,
) -> Path:
    """A tokenizer.json; `vocab` defaults to the 256 bytes plus each merge's result, in merge order."""
    if vocab is None:
        vocab = dict(BYTES)
        for merge in merges:
            left, right = merge.split(" ") if isinstance(merge, str) else merge
            vocab.setdefault(left + right, len(vocab))
    data = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for name, i in (added or {}).items()
        ],
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer or BYTE_LEVEL,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges, **model},  # fmt: skip
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def hf_oracle(path: Path):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(path))
    return lambda text: hf.encode(text, add_special_tokens=False).ids


# ---------------------------------------------------------------- the merge rule, worked by hand


def test_merges_rank_by_their_order_not_by_the_ids_they_make(tmp_path):
    vocab = {**BYTES, "bc": 256, "ab": 257}
    strings = Tokenizer.from_hf(write_json(tmp_path / "s.json", ["a b", "b c"], vocab))
    pairs = Tokenizer.from_hf(write_json(tmp_path / "p.json", [["b", "c"], ["a", "b"]], vocab))
    assert strings.encode("abc") == [257, ord("c")]  # "a b" is listed first, though "bc" has the lower id
    assert pairs.encode("abc") == [ord("a"), 256]
    assert strings.merges == [(97, 98), (98, 99)] and pairs.vocab_size == 258


def test_only_listed_merges_apply(tmp_path):
    # "abc" is a token, made by (ab, c); tiktoken's rule would also join (a, bc)
    path = write_json(tmp_path / "t.json", ["b c", "a b", "ab c"])
    assert Tokenizer.from_hf(path).encode("abc") == [ord("a"), 256]
    assert Tokenizer.from_hf(write_json(tmp_path / "w.json", ["b c", "a b", "ab c"], ignore_merges=True)).encode("abc") == [258]


def test_a_vocab_without_every_byte_says_which_bytes_a_text_loses(tmp_path):
    # `tokenizers` drops "d" from "adb" without a word; a released model's file must keep its own ids
    # (SmolLM2's lacks six control characters), so it loads with a warning naming the byte
    vocab = {SHOW[b]: b for b in range(256) if b != ord("d")} | {"ab": 256}
    with pytest.warns(UserWarning, match="has no token for byte 0x64: a text holding one loses it"):
        tok = Tokenizer.from_hf(write_json(tmp_path / "t.json", ["a b"], vocab))
    assert tok.encode("adb") == [256]           # dropped before merging, as `tokenizers` drops it
    # bytes that UTF-8 never uses can be missing without a word
    utf8_only = {SHOW[b]: b for b in range(256) if b not in (0xC0, 0xC1, *range(0xF5, 0x100))}
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Tokenizer.from_hf(write_json(tmp_path / "v.json", [], utf8_only))
    with pytest.warns(UserWarning, match=r"byte 0x00, 0x01, .* \(and 23\d more\)"):
        Tokenizer.load(write_json(tmp_path / "u.json", ["a b"], {"a": 0, "b": 1, "ab": 2}))


def test_added_tokens_and_nfc(tmp_path):
    path = write_json(tmp_path / "t.json", ["Ã ©"], added={"<|eot|>": 257}, normalizer={"type": "NFC"})
    tok = Tokenizer.from_hf(path)
    assert tok.special_tokens == {"<|eot|>": 257} and tok.vocab_size == 258
    assert tok.encode("e\u0301<|eot|>", allowed_special="all") == tok.encode("é<|eot|>", allowed_special="all") == [256, 257]
    assert tok.decode([256, 257]) == "é<|eot|>"


def test_split_regex_keeps_the_text_between_matches_and_reads_dollar_per_line(tmp_path):
    letters = Tokenizer.from_hf(write_json(tmp_path / "l.json", ["1 2", "Ġ 12"], pre_tokenizer=split(r"\p{L}+")))
    assert letters.encode("ab 12!cd") == [ord("a"), ord("b"), 257, ord("!"), ord("c"), ord("d")]
    # `$` ends a line: "  " before "\n" is one pre-token, so the spaces merge
    dollar = Tokenizer.from_hf(write_json(tmp_path / "d.json", ["Ġ Ġ"], pre_tokenizer=split(r"\s+$|\S+|\s")))
    assert dollar.encode("a  \nb") == [ord("a"), 256, ord("\n"), ord("b")]


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda d: d["model"].update(type="WordPiece"), "WordPiece"),
        (lambda d: d["model"].update(type="Unigram"), "Unigram"),
        (lambda d: d["model"].update(byte_fallback=True), "byte_fallback"),
        (lambda d: d["model"].update(continuing_subword_prefix="##"), "continuing_subword_prefix"),
        (lambda d: d.update(normalizer={"type": "Lowercase"}), "Lowercase"),
        (lambda d: d.update(normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Strip"}]}), "Strip"),
        (lambda d: d.update(pre_tokenizer={"type": "Metaspace", "replacement": "▁"}), "Metaspace"),
        (lambda d: d["pre_tokenizer"].update(add_prefix_space=True), "add_prefix_space"),
        (lambda d: d.update(truncation={"max_length": 8}), "truncation"),
        (lambda d: d["added_tokens"].append({"id": 9, "content": "<x>", "lstrip": True}), "lstrip"),
        (lambda d: d["model"]["vocab"].update({"▁the": 300}), "byte-level"),
        (lambda d: d["model"]["merges"].append("a z"), "not in the vocab"),
        (lambda d: d["model"]["merges"].append("a b c"), "not two tokens"),
        (lambda d: d["added_tokens"].append({"id": 300, "content": "<x>"}), "tokenizers gives it id 257"),
    ],
)
def test_unsupported_features_are_errors_that_name_them(tmp_path, change, named):
    path = write_json(tmp_path / "t.json", ["a b"])
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=named):
        Tokenizer.from_hf(path)


def test_load_reads_both_formats_and_save_keeps_an_hf_tokenizer_in_its_format(tmp_path):
    path = write_json(tmp_path / "tokenizer.json", ["a b"], added={"<|eot|>": 257})
    tok = Tokenizer.load(path)
    assert tok.encode("ab<|eot|>", allowed_special="all") == [256, 257]
    tok.save(tmp_path / "saved.json")               # what a checkpoint does with whatever tokenizer it has
    assert json.loads((tmp_path / "saved.json").read_text())["model"]["type"] == "BPE"
    tok.save_hf(tmp_path / "again.json")
    for copy in ("saved.json", "again.json"):
        assert Tokenizer.load(tmp_path / copy).encode("ab<|eot|>", allowed_special="all") == [256, 257]


# ---------------------------------------------------------------- against `tokenizers`


@pytest.fixture(scope="module")
def trained() -> Tokenizer:
    rng = random.Random(0)
    words = ["the", " cat", "'s", " naïve", " café", "🙂", " 2024", "\n\n", "  ", "don't", " DON'T", "ab", "aba", "bab"]
    text = "".join(rng.choice(words) for _ in range(20000))
    return Tokenizer.train(text, 500, ["<|eot|>"], progress=False)


def llama_style(tok: Tokenizer, path: Path, regex: str, **model) -> Path:
    """A tokenizer.json shaped like Llama 3's or Qwen2's, from our tokenizer's merges."""
    ranks = tok.mergeable_ranks()
    token = {i: t for t, i in ranks.items()}
    show = lambda b: "".join(SHOW[x] for x in b)  # noqa: E731
    vocab = {show(t): i for t, i in ranks.items()}
    merges = [[show(token[left]), show(token[right])] for left, right in tok.merges]
    return write_json(path, merges, vocab, split(regex), added={"<|begin|>": len(vocab), "<|eot|>": len(vocab) + 1}, **model)


@given(text=texts)
def test_llama3_and_qwen2_style_files_give_the_ids_of_tokenizers(trained, tmp_path_factory, text):
    folder = tmp_path_factory.getbasetemp()
    for name, regex, model, normalizer in (
        ("llama3.json", LLAMA3_REGEX, {"ignore_merges": True}, None),
        ("qwen2.json", QWEN2_REGEX, {}, {"type": "NFC"}),
    ):
        path = folder / name
        if not path.exists():
            llama_style(trained, path, regex, **model)
            if normalizer:
                data = json.loads(path.read_text(encoding="utf-8"))
                path.write_text(json.dumps({**data, "normalizer": normalizer}), encoding="utf-8")
        assert Tokenizer.from_hf(path).encode(text, allowed_special="all") == hf_oracle(path)(text), name


def test_gpt2_tokenizer_json_gives_the_ids_of_tokenizers_and_of_from_gpt2(tmp_path):
    encoder, vocab_bpe = DATA / "gpt2" / "encoder.json", DATA / "gpt2" / "vocab.bpe"
    if not (encoder.is_file() and vocab_bpe.is_file()):
        pytest.skip("the shared GPT-2 files are absent")
    merges = vocab_bpe.read_text(encoding="utf-8").rstrip("\n").split("\n")[1:]
    vocab = json.loads(encoder.read_text(encoding="utf-8"))
    path = write_json(tmp_path / "tokenizer.json", merges, vocab, added={"<|endoftext|>": 50256})
    tok, gpt2 = Tokenizer.from_hf(path), Tokenizer.from_gpt2(encoder, vocab_bpe)
    text = (DATA / "the-verdict.txt").read_text(encoding="utf-8") + " naïve 🙂 <|endoftext|>\x1c \u3000 x  \n\n y"
    ids = tok.encode(text, allowed_special="all")
    assert ids == gpt2.encode(text, allowed_special="all")
    assert ids == hf_oracle(path)(text)


@given(text=texts, pattern=st.sampled_from(["gpt2", "cl100k"]))
def test_save_hf_writes_our_ids_for_tokenizers_and_from_hf(trained, tmp_path_factory, text, pattern):
    path = tmp_path_factory.getbasetemp() / f"ours-{pattern}.json"
    tok = Tokenizer(trained.merges, pattern, list(trained.special_tokens))
    if not path.exists():
        tok.save_hf(path)
    ours = tok.encode(text, allowed_special="all")
    back = Tokenizer.from_hf(path)
    assert back.encode(text, allowed_special="all") == ours
    assert back.pattern == tok.pattern  # the built-in patterns come back as themselves
    assert hf_oracle(path)(text) == ours


def test_cl100k_spelling_for_tokenizers_matches_ours_on_odd_whitespace(trained, tmp_path):
    path = tmp_path / "tokenizer.json"
    Tokenizer(trained.merges, CL100K_PATTERN).save_hf(path)
    for text in ["a  \nb", "x \n\n  ", "1234567 89", "  \r\n\t y\n", "end  \n", "a\n  b", "'S'll'VE"]:
        assert hf_oracle(path)(text) == Tokenizer(trained.merges, CL100K_PATTERN).encode(text), repr(text)
