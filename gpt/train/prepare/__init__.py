"""The pretraining data pipeline: raw text -> filters -> dedup -> tokens -> shards, in bounded memory.

    sources.py    documents streamed from .txt / .jsonl / .parquet files, plain, .gz or .zst
    language.py   --lang: py3langid, a minimum confidence, drops counted by language
    quality.py    --quality: Gopher/C4-style rules, each a named, counted reason
    dedup.py      --dedup (exact) and --near-dedup (MinHash LSH, datasketch)
    overlap.py    the val/train (and --check-against) 13-gram overlap, from a bounded sample
    work.py       the per-document steps, run in worker processes, results kept in input order
    shards.py     token shards with a header, their checksums, and TokenStream to read them
    pipeline.py   prepare(cfg): one pass from the inputs to a complete folder and its meta.json
    prepared.py   open_prepared(folder): a prepared folder read back and verified
    command.py    python -m gpt prepare

Every stage that needs an optional package imports it when it runs; they all come
with pip install 'tinygpt[data]'.
"""
from .pipeline import prepare
from .prepared import Prepared, is_prepared, open_prepared
from .settings import PrepareConfig
from .shards import TokenStream, token_dtype
from .tokenizer import EOT, TOKENIZERS, build_tokenizer

__all__ = ["EOT", "TOKENIZERS", "PrepareConfig", "Prepared", "TokenStream", "build_tokenizer", "is_prepared",
           "open_prepared", "prepare", "token_dtype"]
