"""Training data: raw text -> documents -> tokens -> flat .bin files -> batches.

    load_documents(path)            a text file, a folder of .txt files, a .jsonl with a "text" field,
                                    or (path None) the reference text that ships with CPython
    build_tokenizer(kind, docs)     "bpe" (trained here), "bytes", "gpt2", or a saved tokenizer file
    prepare_data(...)               tokenize once, split train/val, write train.bin / val.bin + meta.json;
                                    a second call with the same input and tokenizer reuses them
    BatchSampler(tokens, T, B)      random windows of T + 1 tokens: inputs and next-token targets
    unigram_loss(train, val, V)     the loss of predicting token frequencies: the baseline to beat

Documents are joined with <|endoftext|>, so the model sees where one ends and
the next begins. The .bin files hold the ids as flat uint16 (uint32 when the
vocabulary does not fit), read back with np.memmap: a corpus larger than
memory costs only the pages a batch touches.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bpe import Tokenizer
from gpt.files import inside, read_json_object, write_json
from tinytensor.serialize import write_atomically

EOT = "<|endoftext|>"
TOKENIZERS = ("bpe", "bytes", "gpt2")  # or the path of a saved tokenizer file
# bump when the cache layout or the way tokens are produced changes, so old caches are not reused
CACHE_VERSION = 1


def pad_id(tok: Tokenizer) -> int:
    # any id works for padding (targets there are ignored, and attention is causal); end-of-text is GPT-2's choice
    return tok.special_tokens.get(EOT, 0)


# ---- documents -------------------------------------------------------------

def load_documents(path: str | os.PathLike | None, errors: str = "strict") -> list[str]:
    """The documents of a corpus, in a fixed order.

    - None: the embedded default, CPython's own reference text (`pydoc_data.topics`),
      one document per topic, so no download is ever needed;
    - a folder: every `*.txt` in it (sorted by name), one document each;
    - a `.jsonl` file: the "text" field of each line, one document each;
    - any other file: the whole file as one document.

    `errors` is how undecodable UTF-8 is handled: "strict" raises an error naming
    the file and byte, "replace" substitutes U+FFFD. Empty documents are dropped.
    """
    if path is None:
        import pydoc_data.topics

        docs = [pydoc_data.topics.topics[name] for name in sorted(pydoc_data.topics.topics)]
    else:
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.glob("*.txt") if p.is_file())   # a folder named x.txt is no document
            if not files:
                raise ValueError(f"the folder {path} holds no .txt files (each .txt file is one document)")
            docs = [read_text(f, errors) for f in files]
        elif path.is_file():
            text = read_text(path, errors)
            docs = _jsonl_documents(path, text) if path.suffix == ".jsonl" else [text]
        else:
            raise FileNotFoundError(f"no data at {path}: give a text file, a folder of .txt files or a .jsonl file")
    docs = [d for d in docs if d]
    if not docs or not any(d.strip() for d in docs):
        raise ValueError(f"the corpus {path} is empty: it holds no text to train on")
    return docs


def read_text(path: Path, errors: str = "strict", hint: str | None = "pass --errors replace") -> str:
    """A file's text as UTF-8. Undecodable bytes are an error naming the file, line and
    column (with `hint`, how else to read them), or U+FFFD with errors="replace"."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        fix = f"; fix the file, or {hint} to read such bytes as U+FFFD" if hint else "; save the file as UTF-8"
        raise ValueError(
            f"{path} is not valid UTF-8: byte {e.start} (line {line}, column {column}) is "
            f"{raw[e.start:e.end]!r} ({e.reason}){fix}"
        ) from None


def _jsonl_documents(path: Path, text: str) -> list[str]:
    docs = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f'{path}, line {n}: expected an object with a string "text" field')
        docs.append(record["text"])
    return docs


# ---- tokenizer ---------------------------------------------------------------

def build_tokenizer(kind: str, docs: list[str], vocab_size: int = 1024,
                    gpt2_vocab: str | os.PathLike | None = None) -> Tokenizer:
    """A tokenizer for `docs`: "bpe" trains one of `vocab_size` ids (counting
    <|endoftext|>), "bytes" is the 256 byte values (+ <|endoftext|>), "gpt2" loads
    GPT-2's files from the folder `gpt2_vocab`, anything else is a saved tokenizer file."""
    if kind == "bpe":
        return Tokenizer.train(docs, vocab_size, special_tokens=[EOT], progress=False)
    if kind == "bytes":
        return Tokenizer(special_tokens=[EOT])
    files = _tokenizer_files(kind, gpt2_vocab)
    return Tokenizer.from_gpt2(*files) if kind == "gpt2" else Tokenizer.load(files[0])


def _tokenizer_files(kind: str, gpt2_vocab: str | os.PathLike | None) -> tuple[Path, ...]:
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


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 up to 65536 ids (GPT-2's 50257 fit)."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


# ---- tokenize, split, store ------------------------------------------------------

def split_documents(doc_ids: list[list[int]], eot: int | None, val_fraction: float) -> tuple[list[int], list[int]]:
    """(train ids, val ids). Several documents split on a document boundary, the
    one closest to `val_fraction` of the tokens, with at least one document on
    each side; the documents of each part are joined with `eot`. A single
    document is cut at that fraction of its tokens."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if len(doc_ids) == 1:
        ids = doc_ids[0]
        cut = round(len(ids) * (1.0 - val_fraction))
        return ids[:cut], ids[cut:]
    if eot is None:
        raise ValueError(f"the tokenizer has no {EOT} token, which is needed to join {len(doc_ids)} documents")
    ends = np.cumsum([len(ids) for ids in doc_ids])   # tokens in the first k + 1 documents
    target = ends[-1] * (1.0 - val_fraction)
    k = 1 + int(np.argmin(np.abs(ends[:-1] - target)))  # documents that go to train, 1 .. n - 1

    def join(parts: list[list[int]]) -> list[int]:
        out = list(parts[0])
        for ids in parts[1:]:
            out.append(eot)
            out.extend(ids)
        return out

    return join(doc_ids[:k]), join(doc_ids[k:])


@dataclass
class PreparedData:
    folder: Path          # where train.bin, val.bin, meta.json and tokenizer.json live
    tokenizer: Tokenizer
    train: np.memmap
    val: np.memmap
    meta: dict            # the JSON header: dtype, sizes, source, cache key
    cached: bool          # True when an earlier run's files were reused


def prepare_data(data: str | os.PathLike | None, tokenizer: str, cache_dir: str | os.PathLike,
                 vocab_size: int = 1024, gpt2_vocab: str | os.PathLike | None = None,
                 val_fraction: float = 0.1, errors: str = "strict") -> PreparedData:
    """Load, tokenize and split a corpus into `cache_dir/<key>/`, or reuse what an
    earlier call left there. The key hashes the documents, the tokenizer choice
    and the split, so changing any of them prepares afresh."""
    docs = load_documents(data, errors)
    key = _cache_key(docs, tokenizer, vocab_size, gpt2_vocab, val_fraction)
    folder = Path(cache_dir) / key
    if (folder / "meta.json").is_file():  # written last, so its presence means complete
        return _open(folder)

    tok = build_tokenizer(tokenizer, docs, vocab_size, gpt2_vocab)
    # "none": a literal "<|endoftext|>" inside a document stays text; only our joins are separators
    doc_ids = tok.encode_batch(docs, allowed_special="none")
    train, val = split_documents(doc_ids, tok.special_tokens.get(EOT), val_fraction)
    if not val:
        raise ValueError(f"the corpus is too short to split: {len(train)} tokens leave none for validation")
    dtype = token_dtype(tok.vocab_size)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(folder / "tokenizer.json")
    for name, ids in (("train", train), ("val", val)):
        write_atomically(folder / f"{name}.bin", np.asarray(ids, dtype=dtype).tobytes())
    meta = {
        "dtype": dtype.name,
        "tokenizer": "tokenizer.json",
        "vocab_size": tok.vocab_size,
        "train_tokens": len(train),
        "val_tokens": len(val),
        "documents": len(docs),
        "source": str(data) if data is not None else "pydoc_data.topics (embedded in CPython)",
        "key": key,
    }
    write_json(folder / "meta.json", meta)
    return PreparedData(folder, tok, *_memmaps(folder, dtype), meta, cached=False)


def _open(folder: Path) -> PreparedData:
    """What an earlier call prepared in `folder`."""
    meta = read_json_object(folder / "meta.json")
    tok = Tokenizer.load(inside(folder, meta.get("tokenizer"), str(folder / "meta.json")))
    return PreparedData(folder, tok, *_memmaps(folder, meta["dtype"]), meta, cached=True)


def _memmaps(folder: Path, dtype: Any) -> tuple[np.memmap, np.memmap]:
    """The train and val token streams, read from disk as needed."""
    itemsize = np.dtype(dtype).itemsize
    for name in ("train.bin", "val.bin"):
        size = (folder / name).stat().st_size
        if size % itemsize:
            raise ValueError(f"{folder / name} is damaged: its {size:,} bytes are not a whole number of "
                             f"{np.dtype(dtype).name} tokens; delete {folder} to rebuild it")
    return (np.memmap(folder / "train.bin", dtype=dtype, mode="r"),
            np.memmap(folder / "val.bin", dtype=dtype, mode="r"))


def _cache_key(docs: list[str], tokenizer: str, vocab_size: int, gpt2_vocab: Any, val_fraction: float) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION} val_fraction={val_fraction!r}\n".encode())
    if tokenizer == "bpe":
        h.update(f"bpe vocab_size={vocab_size}\n".encode())
    elif tokenizer == "bytes":
        h.update(b"bytes\n")
    else:  # gpt2 or a file: hash the files' contents, not their names
        h.update(f"{tokenizer if tokenizer == 'gpt2' else 'file'}\n".encode())
        for p in _tokenizer_files(tokenizer, gpt2_vocab):
            h.update(p.read_bytes())
    for doc in docs:
        data = doc.encode("utf-8", errors="surrogatepass")
        h.update(len(data).to_bytes(8, "little"))  # length-prefixed, so ["ab", "c"] and ["a", "bc"] differ
        h.update(data)
    return h.hexdigest()[:16]


# ---- batches -------------------------------------------------------------------

class BatchSampler:
    """Random windows of `block_size + 1` tokens from one split, drawn with a
    generator of its own, so its state can be saved and a resumed run draws
    exactly the batches an uninterrupted one would have."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int | list[int],
                 name: str = "train"):
        if len(tokens) < block_size + 1:
            raise ValueError(
                f"the {name} split has {len(tokens)} tokens, fewer than block_size + 1 = {block_size + 1}: "
                "use a longer corpus, a smaller --block-size, or (for val) a larger --val-fraction"
            )
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.rng = np.random.default_rng(seed)
        self._offsets = np.arange(block_size + 1)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets), each (batch_size, block_size) int64; targets are inputs shifted by one."""
        starts = self.rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)
        windows = self.tokens[starts[:, None] + self._offsets].astype(np.int64)   # (B, T + 1)
        return windows[:, :-1], windows[:, 1:]

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def unigram_loss(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats per token) on `val` of always predicting the token
    frequencies of `train`: the loss to beat. Add-one smoothing gives tokens
    unseen in train a finite cost."""
    counts = np.bincount(np.asarray(train), minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[np.asarray(val)].mean())
