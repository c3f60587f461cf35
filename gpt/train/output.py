"""The output folder of a run, checked before any work is done: a run that cannot
save must fail in its first second, not after hours of training.

    check_output_folder(path)     created if needed, proven writable
    hold_output_folder(path)      the same, then locked for one run at a time
    check_folder_kind(path, ...)  a folder holds one kind of thing (a run, a fine-tune, a model)
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def check_output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create `path` if needed and prove a file can be written in it; otherwise
    raise ValueError naming the flag, the folder and the reason."""
    if not str(path).strip():
        raise ValueError(f"{flag} is empty: give the folder to write to")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is an existing file, not a folder: choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path} cannot be written ({e.strerror or e}): choose a folder you can write to"
                         ) from None
    return path


LOCK_FILE = ".lock"
# what tells a folder's kind: a pretraining run, a fine-tuned model, any other model
RUN_MARKS = ("ckpt", "run.json")
MODEL_MARKS = ("config.json", "model.safetensors", "tokenizer.json", "model.safetensors.index.json")


@contextmanager
def hold_output_folder(path: str | os.PathLike, flag: str = "--out") -> Iterator[Path]:
    """check_output_folder, then an exclusive lock on the folder for as long as the block
    runs: a second run into the same folder is refused, naming the holder's pid. The lock
    is the OS's (flock on OUT/.lock), so it ends with the process: a crash never leaves a
    stale one. On a system without flock the folder is checked but not locked."""
    folder = check_output_folder(path, flag)
    try:
        import fcntl
    except ImportError:                   # Windows: no flock
        yield folder
        return
    with open(folder / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise ValueError(f"{flag} {folder} is in use by another run (pid {holder}): wait for it to end, or "
                             f"choose another {flag}") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield folder
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def folder_kind(path: str | os.PathLike) -> str | None:
    """What a folder holds, in words: "a pretraining run", "a fine-tuned model", "a model",
    or None (absent, empty, or holding none of these)."""
    path = Path(path)
    if not path.is_dir():
        return None
    if any((path / mark).exists() for mark in RUN_MARKS):
        return "a pretraining run"
    if not any((path / mark).exists() for mark in MODEL_MARKS):
        return None
    try:
        task = json.loads((path / "config.json").read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        task = None
    return "a fine-tuned model" if task in ("classify", "instruct") else "a model"


def check_folder_kind(path: str | os.PathLike, writes: str, flag: str = "--out", overwrite: bool = False,
                      replaceable: tuple[str, ...] = ()) -> None:
    """A folder holds one kind of thing. Writing `writes` (one of folder_kind's words) into
    a folder holding something else, or holding `writes` already, is a ValueError naming
    what is there, unless `overwrite` is given and that kind is in `replaceable`."""
    there = folder_kind(path)
    if there is None:
        return
    if overwrite and there in replaceable:
        return
    if there == writes == "a pretraining run":
        return                            # resuming or refusing a second run is gpt.train.pretrain's call
    fix = "pass --overwrite to replace it, or choose another " + flag if there in replaceable else \
        "choose another " + flag
    other = f", and {writes} written there would mix the two" if there != writes else ""
    raise ValueError(f"{flag} {path} already holds {there}{other}: {fix}")
