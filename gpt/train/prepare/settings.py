"""The settings of `python -m gpt prepare`, declared once: the fields are also its flags."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..flags import Settings, at_least, fraction, probability, setting
from .tokenizer import TOKENIZERS


@dataclass(frozen=True)
class PrepareConfig(Settings):
    """Stream a corpus through filters and a tokenizer into token shards in --out."""
    data: tuple[str, ...] | None = setting(None, "text files, .jsonl, .parquet (plain, .gz or .zst) or folders of "
                                           "them", nargs="+", metavar="PATH",
                                           default_text="CPython's reference docs")
    out: str | None = setting(None, "the folder to write: shards, tokenizer.json and meta.json", group="output",
                       required=True)
    overwrite: bool = setting(False, "replace a prepared folder already in --out", group="output")
    # input
    errors: str = setting("skip", "a document that is not valid UTF-8: skipped and counted, read with U+FFFD, "
                          "or an error", group="input", choices=("skip", "replace", "strict"))
    split_text: str | None = setting(None, "cut .txt files into documents at each occurrence of this text "
                                     "(escapes allowed, e.g. '\\n\\n\\n')", group="input",
                                     default_text="a file is one document")
    text_field: str = setting("text", "the field of a .jsonl line, or the column of a Parquet file, "
                              "that holds the text", group="input")
    # tokenizer (as train.py has them)
    tokenizer: str = setting("bpe", f"one of {', '.join(TOKENIZERS)}, or a saved tokenizer file", group="tokenizer")
    vocab_size: int = setting(1024, "vocabulary of a trained --tokenizer bpe, <|endoftext|> included",
                              group="tokenizer", check=at_least(257))
    gpt2_vocab: str | None = setting(None, "folder with GPT-2's encoder.json and vocab.bpe, for --tokenizer gpt2",
                                     group="tokenizer")
    # filters
    fix_text: bool = setting(False, "repair mojibake and odd Unicode with ftfy first", group="filters")
    lang: tuple[str, ...] | None = setting(None, "keep only these languages (py3langid)", group="filters",
                                           default_text="every language")
    lang_confidence: float = setting(0.5, "the least confidence of --lang to keep a document", group="filters",
                                     check=probability)
    quality: bool = setting(False, "drop documents failing the Gopher/C4-style rules (see "
                            "gpt/train/prepare/quality.py)", group="filters")
    dedup: bool = setting(False, "drop exact duplicates (case and whitespace folded), first copy kept",
                          group="filters")
    near_dedup: bool = setting(False, "drop near duplicates: MinHash of word 5-grams with LSH (datasketch)",
                               group="filters")
    near_threshold: float = setting(0.8, "the Jaccard similarity that makes a near duplicate", group="filters",
                                    check=fraction)
    # split and report
    val_fraction: float = setting(0.1, "share of the documents held out for validation, chosen by document hash",
                                  group="split", check=fraction)
    overlap: bool = setting(True, "report the share of val's 13-grams that also occur in train", group="split")
    check_against: str | None = setting(None, "a file (e.g. fine-tuning data) whose 13-grams are looked up in "
                                        "train too", group="split")
    # output format and speed
    shard_tokens: int = setting(100_000_000, "tokens per shard file", group="output", check=at_least(1))
    workers: int | None = setting(None, "processes that filter and tokenize", group="speed", check=at_least(1),
                                  default_text="the cores")
    progress: bool = setting(True, "progress bars and the summary", group="speed")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data is not None and not self.data:
            raise ValueError("--data needs at least one path")
        if self.split_text == "":
            raise ValueError("--split-text must not be empty")
        if self.workers is None:
            object.__setattr__(self, "workers", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                               else os.cpu_count() or 1)

    def filters_on(self) -> list[str]:
        return [name for name, on in (("fix_text", self.fix_text), ("lang", bool(self.lang)),
                                      ("quality", self.quality), ("dedup", self.dedup),
                                      ("near_dedup", self.near_dedup)) if on]
