"""prepare(cfg): inputs -> documents -> filters -> dedup -> tokens -> shards + meta.json, in one pass.

    OUT/train_000000.bin ...    token shards (see shards.py); <|endoftext|> between documents
    OUT/val_000000.bin ...
    OUT/tokenizer.json
    OUT/meta.json               what happened (counts per stage, tokens, overlap), the settings, and
                                each shard's size and sha256; written last

Everything is written into a hidden folder beside OUT, renamed to OUT only when
complete, so an error or a crash midway never leaves a folder that looks prepared.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from bpe import Tokenizer
from tinytensor.serialize import fsync_dir

from .dedup import NearDuplicates
from .hashing import WordHasher, ngram_hashes
from .overlap import NgramSample, NGRAM
from .quality import QualityRules
from .settings import PrepareConfig
from .shards import ShardWriter, token_dtype
from .sources import SourceStats, documents
from .tokenizer import EOT, build_tokenizer, tokenizer_digest
from .work import DocumentWork, process

META = "meta.json"
TOKENIZER = "tokenizer.json"
FORMAT = 1


@dataclass
class Counts:
    documents_in: int = 0
    documents_kept: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    language_dropped: Counter = field(default_factory=Counter)
    quality_dropped: Counter = field(default_factory=Counter)
    split_documents: Counter = field(default_factory=Counter)


def prepare(cfg: PrepareConfig, say: Callable[[str], None] = print) -> Path:
    """Prepare cfg.data into cfg.out and return that folder."""
    out = Path(cfg.out)
    _check_out(out, cfg.overwrite)
    start = time.perf_counter()
    paths = list(cfg.data) if cfg.data is not None else None
    split_text = codecs.decode(cfg.split_text, "unicode_escape") if cfg.split_text else None

    def stream(stats: SourceStats):
        return documents(paths, stats, cfg.errors, split_text, cfg.text_field)

    if cfg.check_against and not Path(cfg.check_against).is_file():
        raise FileNotFoundError(f"--check-against {cfg.check_against}: no such file")
    tok = build_tokenizer(cfg.tokenizer, (d.text for d in stream(SourceStats())), cfg.vocab_size, cfg.gpt2_vocab,
                          progress=cfg.progress)
    eot = tok.special_tokens.get(EOT)
    dtype = token_dtype(tok.vocab_size)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        meta = _write(cfg, tok, eot, dtype, stream, tmp)
        meta["seconds"] = round(time.perf_counter() - start, 2)
        (tmp / META).write_text(json.dumps(meta, indent=2))   # last: its presence marks the folder complete
        fsync_dir(tmp)
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, trash)
            shutil.rmtree(trash)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if cfg.progress:
        say(summary(meta, out))
    return out


def _check_out(out: Path, overwrite: bool) -> None:
    if out.is_file():
        raise ValueError(f"--out {out} is a file: give a folder to prepare into")
    if out.is_dir() and any(out.iterdir()):
        if not (out / META).is_file():
            raise ValueError(f"--out {out} holds files but no prepared data: choose an empty or new folder")
        if not overwrite:
            raise ValueError(f"--out {out} already holds prepared data: pass --overwrite to replace it, "
                             "or choose another --out")


def _write(cfg: PrepareConfig, tok: Tokenizer, eot: int | None, dtype: np.dtype, stream, folder: Path) -> dict:
    stats, counts = SourceStats(), Counts()
    writers = {s: ShardWriter(folder, s, dtype, cfg.shard_tokens) for s in ("train", "val")}
    last_len = {"train": 0, "val": 0}
    exact: set[bytes] = set()
    near = NearDuplicates(cfg.near_threshold) if cfg.near_dedup else None
    grams = NgramSample() if cfg.overlap else None
    last_train_grams = None
    work = DocumentWork(cfg, tok, dtype)
    bar = tqdm(desc="filter + tokenize", unit="B", unit_scale=True, disable=not cfg.progress, delay=1.0)
    texts = (d.text for d in stream(stats))
    for r in process(work, texts, cfg.workers):
        counts.documents_in += 1
        bar.update(stats.bytes_read - bar.n)
        if r.dropped is not None:
            stage, reason = r.dropped
            (counts.language_dropped if stage == "language" else counts.quality_dropped)[reason] += 1
            continue
        if cfg.dedup:
            if r.key in exact:
                counts.exact_duplicates += 1
                continue
            exact.add(r.key)
        if near is not None and near.seen(r.signature):
            counts.near_duplicates += 1
            continue
        # the first document kept always trains, so train is never empty (and a lone document can be cut)
        split = "val" if r.val and counts.documents_kept else "train"
        if counts.split_documents[split]:
            if eot is None:
                raise ValueError(f"the tokenizer has no {EOT} token, which is needed to join documents")
            writers[split].write(np.array([eot], dtype=dtype))
        writers[split].write(r.tokens)
        last_len[split] = len(r.tokens)
        counts.documents_kept += 1
        counts.split_documents[split] += 1
        if grams is not None and split == "val":
            grams.add(split, r.ngrams)
        elif grams is not None:      # held back one document: the last may yet move to val (below)
            if last_train_grams is not None:
                grams.add("train", last_train_grams)
            last_train_grams = r.ngrams
    bar.close()
    if not counts.documents_kept:
        raise ValueError(_empty_message(cfg, stats, counts))
    if not counts.split_documents["val"]:
        moved = _val_from_train_tail(writers, counts, last_len, cfg.val_fraction)
        if moved and grams is not None:
            grams.add("val", last_train_grams)
            last_train_grams = None
    if grams is not None and last_train_grams is not None:
        grams.add("train", last_train_grams)
    shards = {s: w.finish() for s, w in writers.items()}
    tok.save(folder / TOKENIZER)
    digest = tokenizer_digest(tok)
    tokens = {s: w.tokens for s, w in writers.items()}
    if not tokens["val"]:
        raise ValueError(f"the corpus is too short to split: {tokens['train']} tokens leave none for validation")
    return {
        "format": FORMAT,
        "dtype": dtype.name,
        "tokenizer": TOKENIZER,
        "tokenizer_sha256": digest,
        "vocab_size": tok.vocab_size,
        "eot": eot,
        "source": ", ".join(cfg.data) if cfg.data is not None else "pydoc_data.topics (embedded in CPython)",
        "input_files": stats.files,
        "input_bytes": stats.bytes_read,
        "documents_in": counts.documents_in + stats.invalid_utf8,
        "invalid_utf8": stats.invalid_utf8,
        "documents_kept": counts.documents_kept,
        "exact_duplicates": counts.exact_duplicates,
        "near_duplicates": counts.near_duplicates,
        "language_dropped": dict(sorted(counts.language_dropped.items())),
        "quality_dropped": dict(sorted(counts.quality_dropped.items())),
        "train_documents": counts.split_documents["train"],
        "val_documents": counts.split_documents["val"],
        "train_tokens": tokens["train"],
        "val_tokens": tokens["val"],
        "val_train_13gram_overlap": grams.overlap() if grams is not None else None,
        **_check_against(cfg, grams),
        "shards": shards,
        "settings": {**cfg.to_dict(), **({"quality_rules": QualityRules().to_dict()} if cfg.quality else {})},
        "key": _data_key(dtype, digest, shards),
    }


def _val_from_train_tail(writers: dict[str, ShardWriter], counts: Counts, last_len: dict[str, int],
                         val_fraction: float) -> bool:
    """No document's hash chose val (a corpus of one or a few documents): the end of
    train becomes val, its last document (True), or the last val_fraction of a single one."""
    train = writers["train"]
    if counts.split_documents["train"] == 1:
        n = train.tokens - round(train.tokens * (1.0 - val_fraction))
        writers["val"].write(train.take_tail(n))
        counts.split_documents["val"] = 1
        return False
    tail = train.take_tail(last_len["train"] + 1)      # with the <|endoftext|> before it
    writers["val"].write(tail[1:])
    counts.split_documents["train"] -= 1
    counts.split_documents["val"] = 1
    return True


def _empty_message(cfg: PrepareConfig, stats: SourceStats, counts: Counts) -> str:
    where = ", ".join(cfg.data) if cfg.data else "the default corpus"
    if not counts.documents_in and not stats.invalid_utf8:
        return f"the corpus {where} is empty: it holds no text to train on"
    parts = [f"{n} {what}" for n, what in (
        (stats.invalid_utf8, "not valid UTF-8 (see --errors)"),
        (sum(counts.language_dropped.values()), "in other languages (--lang)"),
        (sum(counts.quality_dropped.values()), "failing --quality"),
        (counts.exact_duplicates + counts.near_duplicates, "duplicates")) if n]
    return f"no document of {where} is left to train on: " + ", ".join(parts)


def _check_against(cfg: PrepareConfig, grams: NgramSample | None) -> dict[str, Any]:
    if not cfg.check_against or grams is None:
        return {}
    words = WordHasher()
    found = [ngram_hashes(words.words(d.text), NGRAM) for d in documents([cfg.check_against], SourceStats(),
                                                                           "replace")]
    share = grams.overlap(np.concatenate(found) if found else np.zeros(0, np.uint64))
    return {"check_against": cfg.check_against, "check_against_train_13gram_overlap": share}


def _data_key(dtype: np.dtype, tokenizer_sha256: str, shards: dict[str, list[dict]]) -> str:
    """What the tokens are: the same key means the same ids in the same order."""
    h = hashlib.sha256(f"{dtype.name} {tokenizer_sha256}\n".encode())
    for split in ("train", "val"):
        for rec in shards[split]:
            h.update(f"{split} {rec['sha256']}\n".encode())
    return h.hexdigest()[:16]


def summary(meta: dict, folder: Path) -> str:
    """One screen: what went in, what each stage dropped, what came out."""
    def share(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2%}"

    lines = [
        f"prepared {folder} in {meta['seconds']:.1f}s",
        f"  input           {meta['input_files']} file(s), {meta['input_bytes'] / 1e6:,.1f} MB of text, "
        f"{meta['documents_in']:,} documents",
        f"  invalid UTF-8   {meta['invalid_utf8']:,}",
        f"  language        {sum(meta['language_dropped'].values()):,} dropped  {_counts(meta['language_dropped'])}",
        f"  quality         {sum(meta['quality_dropped'].values()):,} dropped  {_counts(meta['quality_dropped'])}",
        f"  exact dups      {meta['exact_duplicates']:,}",
        f"  near dups       {meta['near_duplicates']:,}",
        f"  kept            {meta['documents_kept']:,} documents: {meta['train_documents']:,} train, "
        f"{meta['val_documents']:,} val",
        f"  tokens          {meta['train_tokens']:,} train + {meta['val_tokens']:,} val ({meta['dtype']}, "
        f"vocabulary {meta['vocab_size']:,}), in {sum(len(v) for v in meta['shards'].values())} shard(s)",
        f"  val 13-grams in train   {share(meta['val_train_13gram_overlap'])}",
    ]
    if "check_against" in meta:
        lines.append(f"  {meta['check_against']} 13-grams in train   {share(meta['check_against_train_13gram_overlap'])}")
    return "\n".join(lines)


def _counts(c: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])) if c else ""
