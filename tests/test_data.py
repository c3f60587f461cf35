"""train.py's data: documents, <|endoftext|> joins, the split, the cache, the samplers, errors.
(The pipeline's stages have their own tests in test_prepare.py.)"""
from __future__ import annotations

import json

import numpy as np
import pytest

from bpe import Tokenizer
from gpt.train.data import (EOT, BatchSampler, EpochSampler, prepare_data, token_dtype, unigram_loss)
from gpt.train.prepare import pipeline
from gpt.train.prepare.sources import SourceStats, documents


def load_documents(path, errors="strict"):
    return [d.text for d in documents(None if path is None else [str(path)], SourceStats(), errors)]


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "b.txt").write_text("second document\n")
    (d / "a.txt").write_text("first document\n")
    (d / "c.txt").write_text("")                  # empty: dropped
    (d / "notes.md").write_text("not a .txt file")  # ignored
    return d


# ---- documents -------------------------------------------------------------

def test_folder_is_one_document_per_txt_file_sorted(folder):
    assert load_documents(folder) == ["first document\n", "second document\n"]


def test_jsonl_text_field_and_plain_file(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"text": "one", "id": 1}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    assert load_documents(p) == ["one", "two"]
    t = tmp_path / "c.txt"
    t.write_text("all of it\nis one document")
    assert load_documents(t) == ["all of it\nis one document"]


def test_default_corpus_is_embedded_and_needs_no_download():
    docs = load_documents(None)
    assert len(docs) > 50 and sum(map(len, docs)) > 100_000


def test_a_single_document_is_cut_by_tokens(tmp_path):
    p = tmp_path / "one.txt"
    p.write_text("".join(chr(97 + i % 26) for i in range(100)))
    d = prepare_data(p, "bytes", tmp_path / "cache", val_fraction=0.1)
    assert d.train.tolist() == list(p.read_bytes()[:90]) and d.val.tolist() == list(p.read_bytes()[90:])


def test_few_documents_give_val_the_last_one_when_no_hash_chose_it(folder, tmp_path):
    # both documents hash to train at val_fraction 0.01: the last one becomes val
    d = prepare_data(folder, "bytes", tmp_path / "cache", val_fraction=0.01)
    assert d.tokenizer.decode(d.train.tolist()) == "first document\n"
    assert d.tokenizer.decode(d.val.tolist()) == "second document\n"
    assert (d.meta["train_documents"], d.meta["val_documents"]) == (1, 1)


def test_prepare_data_writes_shards_with_endoftext_between_documents(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    texts = [f"document number {i}\n" for i in range(40)]
    for i, t in enumerate(texts):
        (docs / f"{i:02d}.txt").write_text(t)
    d = prepare_data(docs, "bytes", tmp_path / "cache", val_fraction=0.3)
    assert d.train.dtype == np.uint16 and d.meta["dtype"] == "uint16" and d.meta["documents_kept"] == 40
    eot = d.tokenizer.special_tokens[EOT]
    train = d.tokenizer.decode(d.train.tolist()).split(EOT)
    val = d.tokenizer.decode(d.val.tolist()).split(EOT)
    # every document once, in input order within each split, joined by <|endoftext|>
    assert sorted(train + val) == sorted(texts)
    for part in (train, val):
        positions = [texts.index(t) for t in part]
        assert positions == sorted(positions)
    assert 4 <= len(val) <= 20 and d.train.tolist().count(eot) == len(train) - 1
    header = json.loads((d.folder / "meta.json").read_text())
    assert header["train_tokens"] == len(d.train) and header["vocab_size"] == 257
    # the split is the documents' hashes: the same on a second preparation elsewhere
    again = prepare_data(docs, "bytes", tmp_path / "cache2", val_fraction=0.3)
    assert again.val.tolist() == d.val.tolist()


def test_literal_endoftext_inside_a_document_stays_text(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(f"a {EOT} b " * 20)
    d = prepare_data(p, "bytes", tmp_path / "cache")
    assert d.tokenizer.special_tokens[EOT] not in d.train.tolist()


def test_cache_hit_skips_tokenizer_training(folder, tmp_path, monkeypatch):
    first = prepare_data(folder, "bpe", tmp_path / "cache", vocab_size=270, val_fraction=0.5)
    assert not first.cached

    def boom(*args, **kwargs):
        raise AssertionError("the tokenizer was trained again")

    monkeypatch.setattr(Tokenizer, "train", boom)
    second = prepare_data(folder, "bpe", tmp_path / "cache", vocab_size=270, val_fraction=0.5)
    assert second.cached and second.folder == first.folder
    assert np.array_equal(second.train, first.train)
    # a different vocabulary is a different cache entry
    with pytest.raises(AssertionError, match="trained again"):
        prepare_data(folder, "bpe", tmp_path / "cache", vocab_size=300, val_fraction=0.5)


def test_changed_input_misses_the_cache(folder, tmp_path):
    first = prepare_data(folder, "bytes", tmp_path / "cache", val_fraction=0.5)
    (folder / "a.txt").write_text("first document, edited\n")
    second = prepare_data(folder, "bytes", tmp_path / "cache", val_fraction=0.5)
    assert not second.cached and second.folder != first.folder


def test_memmap_dtype_choice():
    assert token_dtype(257) == np.uint16
    assert token_dtype(50257) == np.uint16
    assert token_dtype(65536) == np.uint16   # ids 0..65535 fit
    assert token_dtype(65537) == np.uint32
    assert token_dtype(100277) == np.uint32


def test_large_vocabulary_is_stored_as_uint32(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "token_dtype", lambda vocab_size: np.dtype(np.uint32))
    d = prepare_data(folder, "bytes", tmp_path / "cache", val_fraction=0.5)
    assert d.train.dtype == np.uint32 and d.meta["dtype"] == "uint32"
    assert (d.folder / "train_000000.bin").stat().st_size == 32 + 4 * len(d.train)


def test_gpt2_tokenizer_from_shared_files(shared_data, tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("Hello world, this is GPT-2's tokenizer. " * 10)
    d = prepare_data(p, "gpt2", tmp_path / "cache", gpt2_vocab=shared_data / "gpt2")
    assert d.tokenizer.vocab_size == 50257 and d.train.dtype == np.uint16
    assert d.train[:2].tolist() == [15496, 995]   # "Hello", " world" in GPT-2's vocabulary


def test_saved_tokenizer_file(folder, tmp_path):
    path = tmp_path / "tok.json"
    Tokenizer(special_tokens=[EOT]).save(path)
    d = prepare_data(folder, str(path), tmp_path / "cache", val_fraction=0.5)
    assert d.tokenizer.vocab_size == 257


# ---- batches -------------------------------------------------------------------

def test_batches_are_windows_with_shifted_targets_and_resumable():
    tokens = np.arange(1000, dtype=np.uint16)
    s = BatchSampler(tokens, block_size=8, batch_size=4, seed=0)
    x, y = s.sample()
    assert x.shape == y.shape == (4, 8) and x.dtype == np.int64
    assert np.array_equal(y, x + 1) and np.all(np.diff(x, axis=1) == 1)
    state = s.state_dict()
    expected = s.sample()
    s2 = BatchSampler(tokens, block_size=8, batch_size=4, seed=123)
    s2.load_state_dict(json.loads(json.dumps(state)))   # survives a JSON round trip
    assert all(np.array_equal(a, b) for a, b in zip(s2.sample(), expected))


def test_windows_reach_the_last_token_and_stay_in_bounds():
    tokens = np.arange(10, dtype=np.uint16)
    s = BatchSampler(tokens, block_size=9, batch_size=3, seed=0)
    x, y = s.sample()   # exactly one window fits
    assert np.array_equal(x[0], np.arange(9)) and np.array_equal(y[0], np.arange(1, 10))


def test_unigram_loss():
    train = np.array([0, 0, 0, 1])
    val = np.array([0, 1])
    # add-one smoothed frequencies over 3 ids: (4/7, 2/7, 1/7)
    assert unigram_loss(train, val, 3) == pytest.approx(-(np.log(4 / 7) + np.log(2 / 7)) / 2)


# ---- clear errors -------------------------------------------------------------

def test_corpus_shorter_than_a_block():
    with pytest.raises(ValueError, match=r"train split has 10 tokens, fewer than block_size \+ 1 = 17"):
        BatchSampler(np.arange(10, dtype=np.uint16), block_size=16, batch_size=2, seed=0)


def test_empty_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        prepare_data(empty, "bytes", tmp_path / "cache")
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n")
    with pytest.raises(ValueError, match="empty"):
        prepare_data(blank, "bytes", tmp_path / "cache")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no .txt, .jsonl or .parquet files"):
        prepare_data(tmp_path / "nothing", "bytes", tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="no data at"):
        prepare_data(tmp_path / "missing.txt", "bytes", tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())     # nothing half-written left behind


def test_undecodable_bytes_say_where_and_offer_replace(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"fine\nab\xffcd\n")
    with pytest.raises(ValueError, match=r"byte 7 \(line 2, column 3\).*--errors replace"):
        prepare_data(p, "bytes", tmp_path / "cache")
    assert load_documents(p, errors="replace") == ["fine\nab\ufffdcd\n"]


def test_bad_jsonl_lines(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match='line 2: expected an object with a string "text" field'):
        load_documents(p)
    p.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        prepare_data(p, "bytes", tmp_path / "cache")


def test_tokenizer_choice_errors(folder, tmp_path):
    with pytest.raises(ValueError, match="--gpt2-vocab"):
        prepare_data(folder, "gpt2", tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="neither one of"):
        prepare_data(folder, "no-such-tokenizer.json", tmp_path / "cache")
    with pytest.raises(ValueError, match="val-fraction"):
        prepare_data(folder, "bytes", tmp_path / "cache", val_fraction=0.0)
    nosep = tmp_path / "nosep.json"
    Tokenizer().save(nosep)
    with pytest.raises(ValueError, match="no <\\|endoftext\\|> token"):
        prepare_data(folder, str(nosep), tmp_path / "cache")


def test_too_short_to_split(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("abc")
    with pytest.raises(ValueError, match="too short to split"):
        prepare_data(p, "bytes", tmp_path / "cache", val_fraction=0.1)


def test_epoch_sampling_takes_every_window_once_per_pass_and_resumes():
    tokens = np.arange(81, dtype=np.uint16)            # 10 windows of 8 + 1 tokens at 0, 8, ..., 72
    s = EpochSampler(tokens, block_size=8, batch_size=4, seed=[1, 2])
    firsts = np.concatenate([s.sample()[0][:, 0] for _ in range(5)])   # 20 windows: two passes
    assert sorted(firsts[:10].tolist()) == list(range(0, 80, 8)) == sorted(firsts[10:].tolist())
    assert firsts[:10].tolist() != firsts[10:].tolist()               # each pass in its own order
    x, y = s.sample()
    assert np.array_equal(y, x + 1)
    state = json.loads(json.dumps(s.state_dict()))
    expected = [s.sample() for _ in range(3)]
    s2 = EpochSampler(tokens, block_size=8, batch_size=4, seed=[1, 2])
    s2.load_state_dict(state)
    assert all(np.array_equal(a, b) for e, got in zip(expected, [s2.sample() for _ in range(3)])
               for a, b in zip(e, got))
    with pytest.raises(ValueError, match="does not fit this split"):
        s2.load_state_dict({"epoch": 0, "position": 99})
