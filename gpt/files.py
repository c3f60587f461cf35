"""The file names of a model folder, and the rules every reader of one follows (shared by
gpt.pretrained, gpt.hf_llama, the training checkpoints and any other loader):

    inside(folder, name, named_in)           a path a file names, refused if it leaves the folder
    read_json_object(path)                   a JSON file holding an object
    read_safetensors_header(path)            a safetensors file's tensors, checked, nothing loaded
    config_int / config_float(raw, key, ...) a number of a config.json, named when it is wrong
    check_finite(state, where)               weights holding NaN or inf are refused

A folder, and every file in it, may come from anyone: the paths it names stay
inside it, the sizes it declares are checked against what it holds before
anything is allocated, and a malformed entry is one error naming the field.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinytensor.serialize import verify_digests, write_atomically

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"

# the header of a safetensors file: bigger than this, it is some other format (or an attack)
MAX_HEADER_BYTES = 100 * 1024 * 1024


def write_json(path: str | Path, obj: Any) -> None:
    """obj as indented JSON, written atomically."""
    write_atomically(path, json.dumps(obj, indent=2).encode())


def read_json_object(path: Path) -> dict:
    """A JSON file holding an object; ValueError names the file when it does not."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): the file is corrupt") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a JSON object: the file is corrupt")
    return raw


def inside(folder: str | os.PathLike, name: Any, named_in: str) -> Path:
    """folder / name, for a file name that `named_in` (a file of the folder) gives. A name
    that is not a plain relative path, or that leads out of the folder (by `..`, an absolute
    path or a symlink), is a ValueError naming the entry: a folder may come from anyone."""
    root = Path(folder).resolve()
    if not isinstance(name, str) or not name or "\0" in name:
        raise ValueError(f"{named_in} names the file {name!r}, which is not a file name: the folder is corrupt")
    path = Path(folder) / name
    if Path(name).is_absolute() or not path.resolve().is_relative_to(root):
        raise ValueError(f"{named_in} names the file {name!r}, which is outside {folder}: a model folder may only "
                         "refer to its own files (refused)")
    return path


def verify_listed(folder: str | os.PathLike, digests: Any, recorded_in: str) -> None:
    """verify_digests for a {file: {"sha256", "bytes"}} that a file of the folder records:
    each name must stay inside the folder, each entry must have its two fields."""
    where = f"{Path(folder) / recorded_in}"
    if not isinstance(digests, dict):
        raise ValueError(f"{where}: 'checksums' must be an object, got {type(digests).__name__}")
    for name, entry in digests.items():
        inside(folder, name, where)
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("bytes"), int)):
            raise ValueError(f"{where}: the checksum of {name} must be {{'sha256': text, 'bytes': integer}}, "
                             f"got {entry!r}")
    verify_digests(folder, digests, recorded_in)


# ---- safetensors headers --------------------------------------------------------
@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: where its bytes lie in the data that follows it."""
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


# bytes per element of the safetensors dtypes
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "U16": 2, "U32": 4, "U64": 8, "BOOL": 1}


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorEntry], int]:
    """(name -> TensorEntry, the byte offset where the data starts) of a safetensors file,
    every entry checked (dtype, shape, data_offsets that fit the file and the shape); the
    tensors themselves are not read. ValueError names the file and the entry."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if n is None or n > min(size - 8, MAX_HEADER_BYTES):
            raise ValueError(f"{path} is not a safetensors file, or a truncated one (its header does not fit)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (its header is not a JSON object)")
    data_size = size - 8 - n
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: the header's entry {name!r}"
        if not isinstance(info, dict):
            raise ValueError(f"{where} is a {type(info).__name__}, not an object with dtype, shape and "
                             "data_offsets: the file is corrupt")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"{where} has dtype {dtype!r}, which safetensors does not define: the file is corrupt")
        if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
            raise ValueError(f"{where} has shape {shape!r}: a shape is a list of whole numbers >= 0")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
            raise ValueError(f"{where} has data_offsets {offsets!r}: expected [start, end] in bytes")
        start, end = offsets
        if end > data_size:
            raise ValueError(f"{path} is truncated: {name} ends at byte {end:,} of {data_size:,}")
        if end - start != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise ValueError(f"{path} is corrupt: {name}'s {end - start:,} bytes (data_offsets) do not make "
                             f"its shape {shape} of {dtype}")
        entries[name] = TensorEntry(dtype, tuple(shape), start, end)
    return entries, 8 + n


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# ---- config.json values -------------------------------------------------------
_REQUIRED = object()


def config_int(raw: dict, key: str, where: str, default: Any = _REQUIRED) -> Any:
    """raw[key] as a whole number >= 1; `default` when it is absent or null, if one is given
    (an optional size, such as head_dim). ValueError names the field."""
    value = raw.get(key)
    if value is None and default is not _REQUIRED:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {key} must be a whole number >= 1, got {value!r}")
    return value


def config_float(raw: dict, key: str, where: str, default: float) -> float:
    """raw[key] as a finite number > 0 (default when absent); ValueError names the field."""
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: {key} must be a finite number > 0, got {value!r}")
    return float(value)


def check_finite(state: dict[str, Any], where: str) -> None:
    """Refuse weights holding NaN or inf: a model sampled from them would print garbage
    (NUL bytes) rather than fail. Checked a piece at a time, so no model-sized mask is made."""
    for name, arr in state.items():
        arr = np.asarray(arr) if not hasattr(arr, "get") else arr
        if arr.dtype.kind != "f":
            continue
        flat = arr.reshape(-1)
        for start in range(0, flat.size, 1 << 22):
            if not bool(np.isfinite(flat[start:start + (1 << 22)]).all()):
                raise ValueError(f"{where}: the weight {name} holds NaN or infinite values: the model is broken "
                                 "(a diverged run, or a damaged file), so it is not loaded")
