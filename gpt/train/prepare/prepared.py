"""A prepared folder read back: meta.json checked field by field, every shard verified."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bpe import Tokenizer
from gpt.files import read_json_object

from .pipeline import FORMAT, META, TOKENIZER
from .shards import TokenStream, open_shards

FIELDS = {"format": int, "dtype": str, "vocab_size": int, "tokenizer_sha256": str, "shards": dict, "key": str,
          "documents_kept": int, "train_tokens": int, "val_tokens": int}


def is_prepared(path: str | Path | None) -> bool:
    return path is not None and Path(path).is_dir() and (Path(path) / META).is_file()


@dataclass
class Prepared:
    folder: Path
    meta: dict
    tokenizer: Tokenizer
    train: TokenStream
    val: TokenStream


def open_prepared(folder: str | Path, fix: str) -> Prepared:
    """The folder's tokenizer and token streams. A problem is one error naming the
    file; `fix` says how to get a good folder back."""
    folder = Path(folder)
    meta = read_json_object(folder / META)
    for name, kind in FIELDS.items():
        if not isinstance(meta.get(name), kind):
            raise ValueError(f"{folder / META}: the field {name!r} is missing or not a {kind.__name__}; {fix}")
    if meta["format"] != FORMAT:
        raise ValueError(f"{folder} was prepared in format {meta['format']}, this code reads {FORMAT}; {fix}")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise ValueError(f"{folder / META}: dtype {meta['dtype']!r} is not uint16 or uint32; {fix}")
    tok = Tokenizer.load(folder / TOKENIZER)
    if tok.vocab_size != meta["vocab_size"]:
        raise ValueError(f"{folder / TOKENIZER} has {tok.vocab_size} ids, meta.json says {meta['vocab_size']}; {fix}")
    streams = {}
    for split in ("train", "val"):
        records = meta["shards"].get(split)
        if not isinstance(records, list):
            raise ValueError(f"{folder / META}: shards.{split} is not a list; {fix}")
        streams[split] = open_shards(folder, records, meta["dtype"], fix)
        if len(streams[split]) != meta[f"{split}_tokens"]:
            raise ValueError(f"{folder}: the {split} shards hold {len(streams[split]):,} tokens, meta.json says "
                             f"{meta[f'{split}_tokens']:,}; {fix}")
    return Prepared(folder, meta, tok, streams["train"], streams["val"])
