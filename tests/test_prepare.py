"""The data pipeline (gpt/train/prepare): inputs, filters, dedup, overlap, shards, the command, bad input.
Every corpus here is built by the test, with what each stage should find planted in it."""
from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import train_run
from gpt.train.cli import main as gpt_cli
from gpt.train.data import BatchSampler, prepare_data
from gpt.train.prepare import PrepareConfig, open_prepared, prepare, work
from gpt.train.prepare.hashing import document_hash, unit_interval
from gpt.train.prepare.optional import require
from gpt.train.prepare.quality import RULES, QualityRules
from gpt.train.prepare.shards import HEADER, MAGIC
from tinytensor.serialize import CorruptFileError

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT / "bench"))     # last: bench/ has a bpe.py and a gpt.py of its own
from peak_memory import run_watched  # noqa: E402
WORDS = ("time people year way day thing man world life hand part child eye woman place work week case point "
         "number group problem fact river mountain garden letter window morning evening question answer story "
         "music paper money friend family house water light voice power reason moment idea country city road").split()


def prose(seed: int, sentences: int = 40) -> str:
    """English-looking text of its own for each seed: sentences, lines ending in punctuation."""
    rng = random.Random(seed)
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 16))]
        out.append("The " + " ".join(words) + ".")
    return "\n".join(" ".join(out[i:i + 3]) for i in range(0, len(out), 3)) + "\n"


def split_of(text: str, val_fraction: float = 0.1) -> str:
    return "val" if unit_interval(document_hash(text)) < val_fraction else "train"


def run(tmp_path: Path, data: list[Path] | Path, name: str = "out", **settings) -> dict:
    """Prepare `data` into tmp_path/name with the bytes tokenizer; the folder's meta.json."""
    paths = tuple(str(p) for p in (data if isinstance(data, list) else [data]))
    settings = {"tokenizer": "bytes", "progress": False, "workers": 1, **settings}
    folder = prepare(PrepareConfig(data=paths, out=str(tmp_path / name), **settings))
    return json.loads((folder / "meta.json").read_text())


def jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


# ---- the stages ----------------------------------------------------------------------

def test_exact_duplicates_differing_in_case_and_spacing_are_dropped_first_copy_kept(tmp_path):
    docs = [prose(i) for i in range(10)]
    planted = [docs[2].upper(), "  " + docs[5].replace(" ", "   \n "), docs[2]]
    p = jsonl(tmp_path / "c.jsonl", docs + planted)
    meta = run(tmp_path, p, dedup=True)
    assert meta["documents_in"] == 13 and meta["exact_duplicates"] == 3 and meta["documents_kept"] == 10
    assert run(tmp_path, p, "nodedup")["documents_kept"] == 13


def test_near_duplicates_are_found_by_minhash_and_exact_dedup_misses_them(tmp_path):
    pytest.importorskip("datasketch")
    docs = [prose(i, 120) for i in range(12)]
    words = docs[3].split()
    edited = " ".join("zebra" if i % 97 == 0 else w for i, w in enumerate(words))   # ~1% of words changed
    p = jsonl(tmp_path / "c.jsonl", docs + [edited])
    exact = run(tmp_path, p, "exact", dedup=True)
    assert exact["exact_duplicates"] == 0 and exact["documents_kept"] == 13
    near = run(tmp_path, p, "near", dedup=True, near_dedup=True)
    assert near["near_duplicates"] == 1 and near["documents_kept"] == 12
    # deterministic: the same kept set, the same tokens
    assert run(tmp_path, p, "near2", dedup=True, near_dedup=True)["key"] == near["key"]
    # at a threshold above the pair's similarity it is kept
    assert run(tmp_path, p, "strict", near_dedup=True, near_threshold=0.98)["near_duplicates"] == 0
    with pytest.raises(ValueError, match="--near-threshold 0.9999 cannot be banded"):
        run(tmp_path, p, "unbandable", near_dedup=True, near_threshold=0.9999)


FRENCH = ("Le petit village se trouvait au bord de la rivière, et chaque matin les habitants descendaient "
          "vers le marché pour acheter du pain, du fromage et des légumes frais. ")
GERMAN = ("Das kleine Dorf lag am Ufer des Flusses, und jeden Morgen gingen die Bewohner zum Markt, um Brot, "
          "Käse und frisches Gemüse zu kaufen. ")


def test_language_filter_keeps_the_wanted_languages_and_counts_the_others(tmp_path):
    pytest.importorskip("py3langid")
    docs = [prose(i) for i in range(6)] + [FRENCH * (5 + i) for i in range(3)] + [GERMAN * (5 + i) for i in range(2)]
    p = jsonl(tmp_path / "c.jsonl", docs)
    meta = run(tmp_path, p, lang=("en",))
    assert meta["documents_kept"] == 6 and meta["language_dropped"] == {"fr": 3, "de": 2}
    meta = run(tmp_path, p, "enfr", lang=("en", "fr"))
    assert meta["documents_kept"] == 9 and meta["language_dropped"] == {"de": 2}
    # a confidence no identification reaches drops them all: an error that says why
    with pytest.raises(ValueError, match=r"no document of .* is left to train on: 11 in other languages"):
        run(tmp_path, p, "sure", lang=("en",), lang_confidence=0.9999999)
    with pytest.raises(ValueError, match="unknown language code"):
        run(tmp_path, p, "bad", lang=("english",))


def junk() -> dict[str, str]:
    """One document failing each quality rule, and no earlier one."""
    good = prose(99, 60)

    def lines(start: int) -> str:      # a paragraph of five lines of its own
        return "\n".join(good.splitlines()[start:start + 5])

    return {
        "too_short": "Just a few words here.",
        "too_long": prose(7, 100),                       # with max_words lowered below
        "mean_word_length": " ".join(["a b c d e."] * 40),
        "symbols": " ".join(["#tag #more words in a line."] * 30),
        "no_punctuation": "\n".join(" ".join(WORDS[i:i + 6]) for i in range(0, 60, 3)),
        "repeated_lines": "\n".join(["Click here to subscribe to our newsletter today."] * 20 + good.splitlines()[:5]),
        "repeated_paragraphs": "\n\n".join([lines(0), lines(5), lines(10), lines(15)]
                                           + ["Subscribe now to read the rest of this story."] * 4),
    }


def test_each_quality_rule_drops_its_junk_and_counts_it_by_name(monkeypatch, tmp_path):
    rules = QualityRules(max_words=1000)
    for rule, text in junk().items():
        assert rules.reason(text) == rule, rule
    assert rules.reason(prose(1)) is None
    assert set(junk()) == set(RULES)
    monkeypatch.setattr(work, "QualityRules", lambda: rules)
    good = [prose(i) for i in range(5)]
    meta = run(tmp_path, jsonl(tmp_path / "c.jsonl", good + list(junk().values())), quality=True)
    assert meta["documents_kept"] == 5 and meta["quality_dropped"] == {rule: 1 for rule in RULES}


def test_ftfy_repairs_mojibake_first(tmp_path):
    pytest.importorskip("ftfy")
    text = prose(1).replace("The ", "The café ", 3)
    broken = text.encode("utf-8").decode("latin-1")          # the classic mojibake: cafÃ©
    p = jsonl(tmp_path / "c.jsonl", [broken])

    def text_of(folder):
        prepared = open_prepared(folder, "")
        return bytes(prepared.train.tolist() + prepared.val.tolist()).decode()

    run(tmp_path, p)
    assert "cafÃ©" in text_of(tmp_path / "out")
    run(tmp_path, p, "fixed", fix_text=True)
    assert text_of(tmp_path / "fixed") == text


def test_val_text_copied_into_train_shows_in_the_overlap_report(tmp_path):
    val_doc = next(t for t in (prose(i, 300) for i in range(100)) if split_of(t) == "val")
    trains = [t for t in (prose(i, 60) for i in range(100, 200)) if split_of(t) == "train"][:8]
    leaked = trains[0] + val_doc                          # the val document pasted into a train one
    assert split_of(leaked) == "train" or pytest.skip("the planted document hashed to val")
    clean = run(tmp_path, jsonl(tmp_path / "clean.jsonl", [*trains, val_doc]))
    assert clean["val_documents"] == 1 and clean["val_train_13gram_overlap"] == 0.0
    check = tmp_path / "finetune.txt"
    check.write_text(trains[3][:2000])
    dirty = run(tmp_path, jsonl(tmp_path / "dirty.jsonl", [*trains, leaked, val_doc]), "dirty",
                check_against=str(check))
    assert dirty["val_train_13gram_overlap"] == 1.0
    assert dirty["check_against_train_13gram_overlap"] == 1.0
    assert run(tmp_path, tmp_path / "clean.jsonl", "unrelated",
               check_against=str(tmp_path / "clean.jsonl"))["check_against_train_13gram_overlap"] < 1.0


# ---- inputs -----------------------------------------------------------------------------

def test_every_input_format_gives_the_same_documents(tmp_path):
    texts = [prose(i, 8) for i in range(20)]
    plain = jsonl(tmp_path / "c.jsonl", texts)
    reference = run(tmp_path, plain, "ref")
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    folder = tmp_path / "txt"
    folder.mkdir()
    for i, t in enumerate(texts):
        (folder / f"{i:02d}.txt").write_text(t)
    inputs = [gz, folder]
    if (zstd := _maybe("zstandard")) is not None:
        zst = tmp_path / "c.jsonl.zst"
        zst.write_bytes(zstd.ZstdCompressor().compress(plain.read_bytes()))
        inputs.append(zst)
    if (pq := _maybe("pyarrow.parquet")) is not None:
        import pyarrow as pa

        pq.write_table(pa.table({"id": list(range(20)), "body": texts}), tmp_path / "c.parquet", row_group_size=7)
        inputs.append(("parquet", tmp_path / "c.parquet"))
    for i, given in enumerate(inputs):
        extra = {}
        if isinstance(given, tuple):
            given, extra = given[1], {"text_field": "body"}
        assert run(tmp_path, given, f"x{i}", **extra)["key"] == reference["key"], given


def _maybe(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        return None


def test_split_text_cuts_a_txt_file_into_documents(tmp_path):
    p = tmp_path / "books.txt"
    p.write_text("\n\n\n".join(prose(i, 6) for i in range(5)))
    assert run(tmp_path, p, split_text="\\n\\n\\n")["documents_in"] == 5
    assert run(tmp_path, p, "whole")["documents_in"] == 1


# ---- workers, shards, sampler ------------------------------------------------------------

def test_output_is_the_same_for_any_number_of_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(work, "INLINE_CHARS", 0)          # use the pool even for a small corpus
    monkeypatch.setattr(work, "BATCH_CHARS", 500)         # many batches in flight
    p = jsonl(tmp_path / "c.jsonl", [prose(i, 6) for i in range(60)])
    metas = [run(tmp_path, p, f"w{n}", workers=n, shard_tokens=3000) for n in (1, 2, 3)]
    assert len({json.dumps(m["shards"]) for m in metas}) == 1 and len(metas[0]["shards"]["train"]) > 2


def test_shards_have_a_header_and_read_back_as_one_stream(tmp_path):
    texts = [prose(i, 6) for i in range(30)]
    meta = run(tmp_path, jsonl(tmp_path / "c.jsonl", texts), shard_tokens=1000)
    folder = tmp_path / "out"
    raw = (folder / "train_000000.bin").read_bytes()
    magic, version, itemsize, count = HEADER.unpack(raw[:HEADER.size])
    assert (magic, version, itemsize, count) == (MAGIC, 1, 2, 1000) and len(raw) == 32 + 2000
    records = meta["shards"]["train"]
    assert [r["tokens"] for r in records[:-1]] == [1000] * (len(records) - 1) and 0 < records[-1]["tokens"] <= 1000
    stream = open_prepared(folder, "").train
    flat = np.concatenate([np.fromfile(folder / r["file"], dtype=np.uint16, offset=32) for r in records])
    assert len(stream) == meta["train_tokens"] == len(flat)
    positions = np.array([[0, 999, 1000, 1001], [len(flat) - 1, 5, 2500, 1999]])
    assert np.array_equal(stream.take(positions), flat[positions])
    x, y = BatchSampler(stream, 16, 64, seed=0).sample()        # windows straddle shard boundaries
    assert np.array_equal(x[:, 1:], y[:, :-1])
    # each window is a run of the stream: some start in the stream matches the whole row
    assert all(any(np.array_equal(row, flat[s:s + 16]) for s in np.flatnonzero(flat == row[0])) for row in x)


# ---- the command and train.py ------------------------------------------------------------

def test_prepare_command_then_train_from_the_folder_with_epoch_sampling_resumes_bit_identically(tmp_path, capsys):
    p = jsonl(tmp_path / "c.jsonl", [prose(i, 10) for i in range(30)])
    prepared = tmp_path / "prepared"
    gpt_cli(["prepare", "--data", str(p), "--tokenizer", "bytes", "--out", str(prepared), "--dedup",
             "--workers", "1"])
    assert "kept            30 documents" in capsys.readouterr().out
    flags = ["--max-iters", "6", "--sampling", "epoch", "--checkpoint-interval", "3", "--eval-interval", "3",
             "--lr-decay-iters", "6"]
    train_run(prepared, tmp_path / "straight", *flags)
    train_run(prepared, tmp_path / "stopped", *flags[:1], "3", *flags[2:])
    train_run(prepared, tmp_path / "stopped", "--max-iters", "6", "--resume")

    def losses(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r and r.get("step", 0) > 3]

    assert losses(tmp_path / "straight") == losses(tmp_path / "stopped") and losses(tmp_path / "straight")
    run_json = json.loads((tmp_path / "straight" / "run.json").read_text())
    assert run_json["data"]["key"] == json.loads((prepared / "meta.json").read_text())["key"]
    # the folder is not prepared again: no OUT/data
    assert not (tmp_path / "straight" / "data").exists()
    with pytest.raises(SystemExit, match="already holds prepared data: pass --overwrite"):
        gpt_cli(["prepare", "--data", str(p), "--tokenizer", "bytes", "--out", str(prepared)])


def test_a_prepared_folder_of_another_tokenizer_is_one_clear_line(tmp_path, shared_data):
    p = jsonl(tmp_path / "c.jsonl", [prose(i, 10) for i in range(10)])
    run(tmp_path, p)
    with pytest.raises(ValueError, match=r"prepared with another tokenizer \(--tokenizer 'bytes'.*--tokenizer 'gpt2'"):
        prepare_data(tmp_path / "out", "gpt2", tmp_path / "cache", gpt2_vocab=shared_data / "gpt2")
    assert prepare_data(tmp_path / "out", None, tmp_path / "cache").tokenizer.vocab_size == 257
    assert prepare_data(tmp_path / "out", "bytes", tmp_path / "cache").cached


def test_a_token_cache_cut_short_is_not_used_on_resume(corpus, tmp_path):
    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "2")
    shard = next((out / "data").glob("*/train_000000.bin"))
    shard.write_bytes(shard.read_bytes()[:600])
    with pytest.raises(SystemExit, match=rf"{shard.name} is truncated or corrupt.*delete {out / 'data'} to rebuild"):
        train_run(corpus, out, "--max-iters", "4", "--resume")
    shard.unlink()
    import shutil

    shutil.rmtree(out / "data")
    train_run(corpus, out, "--max-iters", "4", "--resume")       # rebuilt: the same tokens, the same key


def test_a_shard_altered_later_is_named(tmp_path):
    run(tmp_path, jsonl(tmp_path / "c.jsonl", [prose(i, 10) for i in range(10)]))
    shard = tmp_path / "out" / "train_000000.bin"
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 1
    shard.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"train_000000\.bin is corrupt: its sha256 differs"):
        prepare_data(tmp_path / "out", None, tmp_path / "cache")


# ---- bad input ------------------------------------------------------------------------------

def test_invalid_utf8_is_skipped_and_counted_or_replaced(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text(prose(i, 5))
    (folder / "bad.txt").write_bytes(prose(9, 5).encode() + b"\xff\xfe")
    meta = run(tmp_path, folder)
    assert meta["invalid_utf8"] == 1 and meta["documents_kept"] == 4 and meta["documents_in"] == 5
    assert run(tmp_path, folder, "rep", errors="replace")["documents_kept"] == 5
    with pytest.raises(ValueError, match=r"bad\.txt is not valid UTF-8: byte"):
        run(tmp_path, folder, "strict", errors="strict")
    only_bad = tmp_path / "bad.txt"
    only_bad.write_bytes(b"\xff" * 10)
    with pytest.raises(ValueError, match="1 not valid UTF-8"):
        run(tmp_path, only_bad, "none")


def test_compressed_files_cut_short_are_named(tmp_path):
    body = "".join(json.dumps({"text": prose(i)}) + "\n" for i in range(20)).encode()
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress(body)[:-20])
    with pytest.raises(ValueError, match=r"c\.jsonl\.gz is cut short or damaged"):
        run(tmp_path, gz)
    zstd = pytest.importorskip("zstandard")
    zst = tmp_path / "c.jsonl.zst"
    zst.write_bytes(zstd.ZstdCompressor().compress(body)[:-20])
    with pytest.raises(ValueError, match=r"c\.jsonl\.zst is cut short or damaged"):
        run(tmp_path, zst, "z")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no half-written folder left


def test_parquet_without_the_column(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "c.parquet")
    with pytest.raises(ValueError, match=r"c\.parquet has no column 'text' \(it has content\).*--text-field"):
        run(tmp_path, tmp_path / "c.parquet")


def test_empty_inputs_and_a_failed_run_leave_nothing_that_looks_prepared(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="is empty"):
        run(tmp_path, tmp_path / "empty.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]


def test_a_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasketch", None)     # what an import finds when it is not installed
    with pytest.raises(ImportError, match=r"--near-dedup needs the package datasketch.*pip install 'tinygpt\[data\]'"):
        require("datasketch", "--near-dedup")


# ---- memory -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_few_hundred_megabytes_prepare_in_bounded_memory(tmp_path):
    corpus = tmp_path / "big.jsonl"
    rng = random.Random(0)
    with open(corpus, "w") as f:
        written = 0
        while written < 200_000_000:
            line = json.dumps({"text": " ".join(rng.choices(WORDS, k=rng.randint(500, 3000))) + "."}) + "\n"
            f.write(line)
            written += len(line)
    cmd = [sys.executable, "-m", "gpt", "prepare", "--data", str(corpus), "--tokenizer", "bytes",
           "--out", str(tmp_path / "out"), "--workers", "2", "--dedup", "--shard-tokens", "50000000",
           "--no-progress"]
    _, returncode, peak = run_watched(cmd, ROOT, every=0.2)
    assert returncode == 0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["train_tokens"] + meta["val_tokens"] > 190_000_000
    assert peak < 1_000_000_000, f"peak resident memory {peak / 1e6:.0f} MB"
