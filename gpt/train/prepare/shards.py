"""Token shards: fixed-size files of uint16 (or uint32) ids behind a small header.

    header (32 bytes, little-endian)   magic b"TGTOKENS", version (u16), bytes per token (u16),
                                       4 bytes reserved, token count (u64), 8 bytes reserved
    body                               count ids, read back with np.memmap

ShardWriter appends a split's token arrays and starts a new file every
`shard_tokens` ids; each shard's size and sha256 go to meta.json, and
open_shards checks them (and the header) before a token is read, so a shard cut
short or altered later is one error naming it. TokenStream is the shards of one
split seen as one sequence, without reading them into memory.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tinytensor.serialize import CorruptFileError, file_digest, verify_digests

MAGIC = b"TGTOKENS"
VERSION = 1
HEADER = struct.Struct("<8sHH4xQ8x")
assert HEADER.size == 32


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 up to 65536 ids (GPT-2's 50257 fit)."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


class ShardWriter:
    """One split's token stream written as `{name}_000000.bin`, `{name}_000001.bin`, ... in `folder`."""

    def __init__(self, folder: Path, name: str, dtype: np.dtype, shard_tokens: int):
        self.folder, self.name, self.dtype, self.shard_tokens = folder, name, np.dtype(dtype), shard_tokens
        self.files: list[dict[str, Any]] = []     # meta.json's record of each finished shard
        self.tokens = 0                           # ids written so far, over all shards
        self._file: Any = None
        self._count = 0                           # ids in the open shard

    def write(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=self.dtype)
        while len(ids):
            if self._file is None:
                self._open()
            room = self.shard_tokens - self._count
            self._file.write(ids[:room].tobytes())
            self._count += min(room, len(ids))
            self.tokens += min(room, len(ids))
            ids = ids[room:]
            if self._count == self.shard_tokens:
                self._close()

    def take_tail(self, n: int) -> np.ndarray:
        """Remove the last `n` ids written and return them; they must lie in the open shard."""
        if self._file is None or n > self._count:
            raise ValueError(f"the last {n:,} {self.name} tokens are not in the shard being written")
        keep = self._count - n
        self._file.flush()
        path = self._path(len(self.files))
        tail = np.fromfile(path, dtype=self.dtype, count=n, offset=HEADER.size + keep * self.dtype.itemsize)
        self._file.seek(HEADER.size + keep * self.dtype.itemsize)
        self._file.truncate()
        self._count, self.tokens = keep, self.tokens - n
        return tail

    def finish(self) -> list[dict[str, Any]]:
        if self._file is not None:
            self._close()
        return self.files

    def _path(self, index: int) -> Path:
        return self.folder / f"{self.name}_{index:06d}.bin"

    def _open(self) -> None:
        self._file = open(self._path(len(self.files)), "wb")
        self._file.write(bytes(HEADER.size))          # the header, with the count, is written on close
        self._count = 0

    def _close(self) -> None:
        f, path = self._file, self._path(len(self.files))
        f.seek(0)
        f.write(HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, self._count))
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self._file = None
        self.files.append({"file": path.name, "tokens": self._count, **file_digest(path)})


def open_shards(folder: Path, records: list[dict[str, Any]], dtype: np.dtype, fix: str) -> "TokenStream":
    """The shards listed in meta.json, checked (size, sha256, header) and memory-mapped.
    `fix` ends the error: how to get a good copy back."""
    dtype = np.dtype(dtype)
    maps = []
    for rec in records:
        name = rec.get("file") if isinstance(rec, dict) else None
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".bin"):
            raise ValueError(f"{folder / 'meta.json'}: a shard entry {rec!r} is not a plain .bin file name in the folder")
        path = folder / name
        try:
            verify_digests(folder, {name: rec}, "meta.json")
        except CorruptFileError as e:
            raise CorruptFileError(f"{e}; {fix}") from None
        maps.append(_map(path, rec, dtype, fix))
    return TokenStream(maps, dtype)


def _map(path: Path, rec: dict[str, Any], dtype: np.dtype, fix: str) -> np.memmap:
    with open(path, "rb") as f:
        magic, version, itemsize, count = HEADER.unpack(f.read(HEADER.size).ljust(HEADER.size, b"\0"))
    problem = None
    if magic != MAGIC:
        problem = "it is not a token shard (no TGTOKENS header)"
    elif version != VERSION:
        problem = f"it has shard format version {version}, this code reads version {VERSION}"
    elif itemsize != dtype.itemsize:
        problem = f"its header says {itemsize}-byte tokens, meta.json says {dtype.name}"
    elif count != rec.get("tokens") or path.stat().st_size != HEADER.size + count * itemsize:
        problem = f"its header says {count:,} tokens, which does not match its size or meta.json"
    if problem:
        raise CorruptFileError(f"{path}: {problem}; {fix}")
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER.size, shape=(count,))


class TokenStream:
    """Several shards as one token sequence: len(), an id or a slice by position, and
    gathering windows at arbitrary positions (which may straddle two shards)."""

    def __init__(self, parts: list[np.ndarray], dtype: np.dtype):
        self.parts, self.dtype = [p for p in parts if len(p)], np.dtype(dtype)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])   # part i covers starts[i] .. starts[i + 1]

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        return self.take(np.asarray([index]))[0] if np.ndim(index) == 0 else self.take(np.asarray(index))

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The ids at `positions` (any shape), in that shape."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"token position out of range 0..{len(self) - 1}")
        out = np.empty(positions.shape, dtype=self.dtype)
        part = np.searchsorted(self.starts, positions, side="right") - 1
        for i in np.unique(part):
            where = part == i
            out[where] = self.parts[i][positions[where] - self.starts[i]]
        return out

    def chunks(self, size: int = 1 << 24) -> Iterator[np.ndarray]:
        """The ids in order, a bounded piece at a time."""
        for p in self.parts:
            for start in range(0, len(p), size):
                yield np.asarray(p[start:start + size])

    def tolist(self) -> list[int]:
        return [int(t) for c in self.chunks() for t in c.tolist()]
