"""The --tokenizer choices: "bpe" (trained on the corpus), "bytes", "gpt2", or a saved file."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable

from bpe import Tokenizer

EOT = "<|endoftext|>"
TOKENIZERS = ("bpe", "bytes", "gpt2")  # or the path of a saved tokenizer file


def build_tokenizer(kind: str, docs: Iterable[str] | None, vocab_size: int = 1024,
                    gpt2_vocab: str | os.PathLike | None = None, progress: bool = False) -> Tokenizer:
    """A tokenizer: "bpe" trains one of `vocab_size` ids (counting <|endoftext|>) on
    `docs`, "bytes" is the 256 byte values (+ <|endoftext|>), "gpt2" loads GPT-2's
    files from the folder `gpt2_vocab`, anything else is a saved tokenizer file."""
    if kind == "bpe":
        return Tokenizer.train(docs, vocab_size, special_tokens=[EOT], progress=progress)
    if kind == "bytes":
        return Tokenizer(special_tokens=[EOT])
    files = tokenizer_files(kind, gpt2_vocab)
    return Tokenizer.from_gpt2(*files) if kind == "gpt2" else Tokenizer.load(files[0])


def tokenizer_files(kind: str, gpt2_vocab: str | os.PathLike | None) -> tuple[Path, ...]:
    """The files a --tokenizer choice reads: none for bpe and bytes, GPT-2's two, or the saved tokenizer."""
    if kind in ("bpe", "bytes"):
        return ()
    if kind == "gpt2":
        return _gpt2_files(gpt2_vocab)
    if not Path(kind).is_file():
        raise FileNotFoundError(f"--tokenizer {kind!r} is neither one of {TOKENIZERS} nor a tokenizer file")
    return (Path(kind),)


def _gpt2_files(folder: str | os.PathLike | None) -> tuple[Path, Path]:
    """GPT-2's (encoder.json, vocab.bpe) as OpenAI named them, or Hugging Face's (vocab.json, merges.txt)."""
    if folder is None:
        raise ValueError("--tokenizer gpt2 needs --gpt2-vocab DIR, a folder with GPT-2's encoder.json and vocab.bpe")
    folder = Path(folder)
    for encoder, merges in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
        if (folder / encoder).is_file() and (folder / merges).is_file():
            return folder / encoder, folder / merges
    raise FileNotFoundError(f"{folder} holds neither encoder.json + vocab.bpe nor vocab.json + merges.txt")


def tokenizer_digest(tok: Tokenizer) -> str:
    """The sha256 of the tokenizer as saved: two tokenizers with the same digest give the same ids."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        tok.save(path)
        return hashlib.sha256(path.read_bytes()).hexdigest()
