"""Save and load named arrays as safetensors files.

safetensors is a JSON header followed by raw array bytes, so loading a file
can never run code, unlike pickle. Saving is atomic: the bytes go to a
temporary file in the same folder, are fsynced, then renamed over the target,
so a crash leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from .backend import check_device, get_array_module, to_device
from .tensor import _data

# safetensors starts with the header's length as a little-endian uint64; a
# header beyond this is a sign of some other format, not a real header
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def save(state_dict: dict[str, Any], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write name -> array (NumPy, CuPy or Tensor) to `path` as safetensors.

    GPU arrays are copied to the CPU first. `metadata` is an optional
    str -> str mapping stored in the header (read it back with `load_metadata`).
    """
    arrays = {}
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"save: keys must be strings, got {name!r}")
        arr = _data(value)
        if not (isinstance(arr, np.ndarray) or get_array_module(arr) is not np):
            raise TypeError(f"save: the value for {name!r} is a {type(value).__name__}, expected an array or Tensor")
        if arr.dtype.kind not in "biufc":
            raise TypeError(f"save: the value for {name!r} has dtype {arr.dtype}, which safetensors cannot store")
        arrays[name] = np.asarray(to_device(arr, "cpu"), order="C")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("save: metadata must map str to str (json.dumps other values first)")
    try:
        blob = safetensors.numpy.save(arrays, metadata=metadata)
    except safetensors.SafetensorError as e:
        raise TypeError(f"save: safetensors cannot store these arrays: {e}") from e
    write_atomically(path, blob)


def write_atomically(path: str | os.PathLike, blob: bytes) -> None:
    """Write `blob` to `path` through a temporary file in the same folder and a
    rename: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path.name}: the folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)                             # mkstemp's 0600 would make the file private
        os.replace(tmp, path)
    except BaseException:
        # BaseException too: a Ctrl-C mid-write must not leave the temp file behind
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(folder)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make the renames inside `folder` durable; not every platform can open a folder."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


class CorruptFileError(ValueError):
    """A file is not what was written: truncated, changed, or missing."""


def file_digest(path: str | os.PathLike) -> dict[str, Any]:
    """{"sha256": hex digest, "bytes": size} of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "bytes": os.path.getsize(path)}


def verify_digests(folder: str | os.PathLike, digests: dict[str, dict[str, Any]], recorded_in: str) -> None:
    """Check every file named in `digests` (name -> file_digest as written) against
    the folder's copy; raise CorruptFileError naming the first that differs."""
    for name, expected in digests.items():
        path = Path(folder) / name
        if not path.is_file():
            raise CorruptFileError(f"{path} is missing ({recorded_in} lists it)")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CorruptFileError(f"{path} is truncated or corrupt: it has {size:,} bytes, "
                                   f"{expected['bytes']:,} were written ({recorded_in})")
        if file_digest(path)["sha256"] != expected["sha256"]:
            raise CorruptFileError(f"{path} is corrupt: its sha256 differs from the one recorded when it "
                                   f"was written ({recorded_in})")


def _check_safetensors(path: Path) -> None:
    """Fail with a clear message unless `path` starts like a safetensors file."""
    if not path.is_file():
        raise FileNotFoundError(f"load: no file at {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and header_len <= _MAX_HEADER_BYTES:
            if header_len <= size - 8:
                return
            raise CorruptFileError(f"load: {path} is a truncated safetensors file: its header alone needs "
                                   f"{header_len + 8:,} bytes, the file has {size:,}")
    raise ValueError(
        f"load: {path} is not a safetensors file (a pickle or torch .pt checkpoint is never "
        "loaded, since unpickling can run arbitrary code)"
    )


def load(path: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """Read a safetensors file into name -> array on `device` (never unpickles)."""
    check_device(device)
    path = Path(path)
    _check_safetensors(path)
    try:
        arrays = safetensors.numpy.load_file(path)
    except safetensors.SafetensorError as e:
        raise CorruptFileError(f"load: {path} is truncated or corrupt: {e}") from e
    return {name: to_device(arr, device) for name, arr in arrays.items()}


def load_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The str -> str metadata stored by `save(..., metadata=...)` ({} if none)."""
    path = Path(path)
    _check_safetensors(path)
    try:
        with safetensors.safe_open(path, framework="np") as f:
            return f.metadata() or {}
    except safetensors.SafetensorError as e:
        raise ValueError(f"load_metadata: {path} is not a valid safetensors file: {e}") from e
