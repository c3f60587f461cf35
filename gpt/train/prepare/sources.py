"""Documents streamed from the inputs, one at a time, never the whole corpus in memory.

    .txt                 one document per file, or one per piece between --split-text separators
    .jsonl               the --text-field of each line (default "text")
    .parquet             the --text-field column, read a batch of rows at a time (pyarrow)
    + .gz / .zst         any of the above compressed (gzip from the standard library, zstandard)
    a folder             every such file under it, in sorted order of their paths
    no input             CPython's reference text (pydoc_data.topics), one document per topic

A document that is not valid UTF-8 is counted and skipped (errors="skip"),
decoded with U+FFFD (errors="replace"), or an error naming the file and byte
(errors="strict"). A compressed file cut short is an error naming it.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from .optional import require

SUFFIXES = (".txt", ".jsonl", ".parquet")
COMPRESSED = (".gz", ".zst")
READ_BYTES = 1 << 20


@dataclass
class Document:
    text: str
    origin: str      # file, and line or row, for messages


@dataclass
class SourceStats:
    files: int = 0
    bytes_read: int = 0                                  # of text, after decompression
    invalid_utf8: int = 0                                # documents skipped (errors="skip")


def input_files(paths: list[str]) -> list[Path]:
    """Every input file, in a fixed order: the paths as given, a folder's files sorted by path."""
    files: list[Path] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            root = p.resolve()
            found = sorted(f for f in p.rglob("*") if f.is_file() and _kind(f)[0]
                           and f.resolve().is_relative_to(root))   # a link out of the folder is not read
            if not found:
                raise ValueError(f"the folder {p} holds no .txt, .jsonl or .parquet files (compressed or not)")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no data at {p}: give text files, .jsonl, .parquet or folders of them")
    return files


def _kind(path: Path) -> tuple[str, str]:
    """(format suffix, compression suffix), e.g. (".jsonl", ".zst"); ("", "") for another kind of file."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    comp = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSED else ""
    fmt = suffixes[-1] if suffixes and suffixes[-1] in SUFFIXES else ""
    return fmt, comp


def fingerprint(paths: list[str] | None) -> str:
    """A hash of the inputs' names and bytes: the same inputs give the same value."""
    h = hashlib.sha256()
    if paths is None:
        for doc in _pydoc_topics():
            h.update(len(doc).to_bytes(8, "little") + doc.encode("utf-8", "surrogatepass"))
        return h.hexdigest()
    for f in input_files(paths):
        h.update(f"{f.name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as stream:
            while chunk := stream.read(READ_BYTES):
                h.update(chunk)
    return h.hexdigest()


def documents(paths: list[str] | None, stats: SourceStats, errors: str = "skip", split_text: str | None = None,
              text_field: str = "text") -> Iterator[Document]:
    """The non-empty documents of the inputs, in order."""
    if paths is None:
        for i, doc in enumerate(_pydoc_topics()):
            stats.bytes_read += len(doc)
            yield Document(doc, f"pydoc_data.topics[{i}]")
        return
    for f in input_files(paths):
        stats.files += 1
        fmt, comp = _kind(f)       # a file named on its own with another suffix is text
        if fmt == ".parquet":
            if comp:
                raise ValueError(f"{f}: a Parquet file compresses its own columns; give it uncompressed")
            yield from _parquet(f, text_field, stats)
            continue
        with _open(f, comp) as stream:
            try:
                if fmt == ".jsonl":
                    yield from _jsonl(f, stream, text_field, stats, errors)
                else:
                    yield from _text(f, stream, split_text, stats, errors)
            except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
                raise ValueError(f"{f} is cut short or damaged ({e}): the compressed stream does not end "
                                 "properly; compress it again or leave it out") from None


def _pydoc_topics() -> list[str]:
    import pydoc_data.topics

    return [pydoc_data.topics.topics[name] for name in sorted(pydoc_data.topics.topics)]


def _open(path: Path, comp: str) -> BinaryIO:
    if comp == ".gz":
        return gzip.open(path, "rb")
    if comp == ".zst":
        zstd = require("zstandard", f"reading {path.name} (.zst)")
        return io.BufferedReader(_ZstdReader(open(path, "rb"), zstd), READ_BYTES)
    return open(path, "rb")


class _ZstdReader(io.RawIOBase):
    """The frames of a .zst file, decompressed; EOFError when the last frame is cut short
    (zstandard's own stream reader just stops there, silently)."""

    def __init__(self, raw: BinaryIO, zstd):
        self.raw, self.zstd = raw, zstd
        self.dobj, self.pending, self.started = zstd.ZstdDecompressor().decompressobj(), b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending:
            data = self.raw.read(READ_BYTES)
            if not data:
                if self.started and not self.dobj.eof:
                    raise EOFError("the last zstd frame ends before its end marker")
                return 0
            while data:
                if self.dobj.eof:            # a new frame begins
                    self.dobj = self.zstd.ZstdDecompressor().decompressobj()
                self.started = True
                try:
                    self.pending += self.dobj.decompress(data)
                except self.zstd.ZstdError as e:
                    raise OSError(f"zstd: {e}") from None
                data = self.dobj.unused_data if self.dobj.eof else b""
        n = min(len(buffer), len(self.pending))
        buffer[:n], self.pending = self.pending[:n], self.pending[n:]
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def _decode(raw: bytes, origin: str, stats: SourceStats, errors: str) -> str | None:
    """The text of one document, or None when it is skipped."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if errors == "replace":
            return raw.decode("utf-8", errors="replace")
        if errors == "skip":
            stats.invalid_utf8 += 1
            return None
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(f"{origin} is not valid UTF-8: byte {e.start} (line {line}, column {column}) is "
                         f"{raw[e.start:e.end]!r} ({e.reason}); fix the file, or pass --errors replace to read "
                         "such bytes as U+FFFD (or --errors skip to leave such documents out)") from None


def _keep(text: str | None) -> bool:
    """Empty and blank documents are left out."""
    return text is not None and not text.isspace() and text != ""


def _text(path: Path, stream: BinaryIO, split_text: str | None, stats: SourceStats,
          errors: str) -> Iterator[Document]:
    if split_text is None:
        raw = stream.read()
        stats.bytes_read += len(raw)
        text = _decode(raw, str(path), stats, errors)
        if _keep(text):
            yield Document(text, str(path))
        return
    sep, rest, n = split_text.encode("utf-8"), b"", 0
    while True:
        chunk = stream.read(READ_BYTES)
        pieces = (rest + chunk).split(sep)
        rest = pieces.pop() if chunk else b""     # the last piece may go on in the next chunk
        for raw in pieces:
            n += 1
            stats.bytes_read += len(raw) + len(sep)
            origin = f"{path}, document {n}"
            text = _decode(raw, origin, stats, errors)
            if _keep(text):
                yield Document(text, origin)
        if not chunk:
            return


def _jsonl(path: Path, stream: BinaryIO, text_field: str, stats: SourceStats, errors: str) -> Iterator[Document]:
    for n, raw in enumerate(stream, start=1):
        stats.bytes_read += len(raw)
        origin = f"{path}, line {n}"
        line = _decode(raw, origin, stats, errors)
        if line is None or not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{origin}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise ValueError(f'{origin}: expected an object with a string "{text_field}" field '
                             f"(choose the field with --text-field)")
        if _keep(record[text_field]):
            yield Document(record[text_field], origin)


def _parquet(path: Path, column: str, stats: SourceStats) -> Iterator[Document]:
    pq = require("pyarrow.parquet", f"reading {path.name} (Parquet)")
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:   # pyarrow raises its own error types for a file that is not Parquet
        raise ValueError(f"{path} is not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    if column not in names:
        raise ValueError(f"{path} has no column {column!r} (it has {', '.join(names)}): choose one with --text-field")
    row = 0
    for batch in pf.iter_batches(columns=[column], batch_size=1024):
        for value in batch.column(0).to_pylist():
            row += 1
            if isinstance(value, str):
                stats.bytes_read += len(value)
                if _keep(value):
                    yield Document(value, f"{path}, row {row}")
            elif value is not None:
                raise ValueError(f"{path}, row {row}: the column {column!r} holds {type(value).__name__}, not text")
