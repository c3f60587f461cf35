"""Training checkpoints: everything needed to continue a run bit for bit, verified before use.

    OUT/ckpt/step_000500/
        model.safetensors     the weights
        optim.safetensors     AdamW's moment arrays
        tokenizer.json
        config.json           {"model": GPTConfig, "train": the run's settings,
                               "checksums": sha256 and size of the three files above}
        state.json            step, optimizer counters, RNG states, data key, and the
                              checksum of config.json; written last

A checkpoint is written into a hidden temporary folder and renamed into place
only once complete, so a crash mid-write leaves a `.tmp-*` folder that is never
taken for a checkpoint. Reading one verifies every checksum, so a flipped or
truncated byte is an error naming the file, never garbage weights. The latest
good checkpoint is the highest-numbered `step_*` folder that reads back whole;
a broken newer one is reported and renamed `broken-step_*`, never deleted.
The newest `keep` checkpoints are kept. Nothing here unpickles.
"""
from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bpe import Tokenizer
from gpt.files import verify_listed
from gpt.pretrained import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, is_gguf, read_config, read_json_object, write_json
from tinytensor import load, save
from tinytensor.serialize import CorruptFileError, file_digest, fsync_dir

CKPT_DIR = "ckpt"
OPTIM_FILE = "optim.safetensors"
STATE_FILE = "state.json"


class BrokenCheckpoint(ValueError):
    """A checkpoint folder that cannot be used: a file missing, truncated, corrupt or unreadable."""


def step_folder(out: str | os.PathLike, step: int) -> Path:
    return Path(out) / CKPT_DIR / f"step_{step:06d}"


def save_checkpoint(out: str | os.PathLike, step: int, model_state: dict[str, Any], optim_state: dict[str, Any],
                    config: dict, state: dict, tokenizer: Tokenizer, keep: int = 2) -> Path:
    """Write the checkpoint of `step` under OUT/ckpt and return its folder.

    `optim_state` is an optimizer's `state_dict()`; its arrays go to safetensors,
    its counters and groups into state.json beside `state` (JSON-able: RNGs...).
    Keeps the newest `keep` checkpoints (at least the previous good one).
    """
    final = step_folder(out, step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    for leftover in [*root.glob(".tmp-*"), *root.glob(".del-*")]:
        shutil.rmtree(leftover, ignore_errors=True)   # from a run that crashed mid-write
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    writing = "the checkpoint's folder"
    try:
        tmp.mkdir()
        writing = MODEL_FILE
        save(model_state, tmp / MODEL_FILE)
        writing = OPTIM_FILE
        save(optim_state["arrays"], tmp / OPTIM_FILE)
        writing = TOKENIZER_FILE
        tokenizer.save(tmp / TOKENIZER_FILE)
        writing = CONFIG_FILE
        write_json(tmp / CONFIG_FILE, {**config, "checksums": digests(tmp, (MODEL_FILE, OPTIM_FILE, TOKENIZER_FILE))})
        full_state = {**state, "step": step, "checksums": digests(tmp, (CONFIG_FILE,)),
                      "optimizer": {"scalars": optim_state["scalars"], "param_groups": optim_state["param_groups"]}}
        writing = STATE_FILE
        write_json(tmp / STATE_FILE, full_state)   # last: its presence marks the folder complete
        fsync_dir(tmp)
        if final.exists():
            # the same step saved again (a resumed run that had nothing left to do): move the old one aside
            _remove(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(_disk_full(out, step, writing, model_state, optim_state)) from None
        raise
    for old in list_checkpoints(out)[:-keep]:
        _remove(old)
    return final


class DiskFull(OSError):
    """The disk filled up while a checkpoint was written (the previous ones are untouched)."""


def _disk_full(out: str | os.PathLike, step: int, writing: str, model_state: dict, optim_state: dict) -> str:
    """One line: what was being written, which checkpoint is intact, how much space a checkpoint needs."""
    needed = sum(getattr(a, "nbytes", 0) for a in (*model_state.values(), *optim_state["arrays"].values()))
    previous = latest_checkpoint(out)
    kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint was written"
    return (f"the disk is full: writing {writing} of the step-{step} checkpoint in {Path(out) / CKPT_DIR} failed; "
            f"{kept}. A checkpoint needs about {needed / 2**20:,.1f} MiB: free that much (or more) and resume "
            "with --resume")


def digests(folder: Path, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """name -> {"sha256", "bytes"} of files in `folder`, recorded in the file written after them."""
    return {name: file_digest(folder / name) for name in names}


def list_checkpoints(out: str | os.PathLike) -> list[Path]:
    """The complete checkpoints under OUT/ckpt (state.json written), oldest first; not yet verified."""
    root = Path(out) / CKPT_DIR
    if not root.is_dir():
        return []
    # a symlink is not a checkpoint this run wrote (and may lead anywhere): passed by, never pruned
    folders = [p for p in root.glob("step_*")
               if p.name[5:].isdigit() and not p.is_symlink() and (p / STATE_FILE).is_file()]
    return sorted(folders, key=lambda p: int(p.name[5:]))


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under OUT/ckpt, or None (see latest_good_checkpoint)."""
    found = list_checkpoints(out)
    return found[-1] if found else None


def latest_good_checkpoint(out: str | os.PathLike, say: Callable[[str], None] = print) -> "Checkpoint | None":
    """The newest checkpoint under OUT/ckpt that reads back whole, or None when there is
    none. A broken newer one is reported in one line and renamed `broken-step_*`, so
    later runs and the pruning of old checkpoints pass it by."""
    found = list_checkpoints(out)
    for folder in reversed(found):
        try:
            ckpt = Checkpoint.read(folder)
        except BrokenCheckpoint as e:
            aside = folder.with_name(f"broken-{folder.name}")
            say(f"warning: skipping the broken checkpoint {folder} ({e}); it is kept as {aside.name}")
            os.replace(folder, aside)
            continue
        if folder != found[-1]:
            say(f"continuing from the previous good checkpoint, step {ckpt.step} ({folder})")
        return ckpt
    return None


def resolve_checkpoint(folder: str | os.PathLike, say: Callable[[str], None] = print) -> Path:
    """A folder to load a model from: `folder` itself when it holds a config.json
    (a checkpoint, a fine-tuned model or a Hugging Face folder), else the latest
    good checkpoint of a training output folder; a GGUF file is itself."""
    path = Path(folder)
    if is_gguf(path) and path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist")
    if (path / CONFIG_FILE).is_file() or (path / STATE_FILE).is_file():
        if (path / STATE_FILE).is_file():
            Checkpoint.read(path)          # a named checkpoint that is broken is an error, not a fallback
        return path
    latest = latest_good_checkpoint(path, say)
    if latest is None:
        raise FileNotFoundError(
            f"{path} has no {CONFIG_FILE} and no good checkpoints in {path / CKPT_DIR}: give a checkpoint folder "
            "or the --out folder of a training run"
        )
    return latest.folder


@dataclass
class Checkpoint:
    folder: Path
    step: int
    config: dict   # config.json: {"model": ..., "train": ..., "checksums": ...}
    state: dict    # state.json

    @classmethod
    def read(cls, folder: str | os.PathLike, verify: bool = True) -> "Checkpoint":
        """Read and verify a checkpoint; BrokenCheckpoint names the file that is wrong.
        verify=False skips the checksums, for a checkpoint this run has just verified."""
        folder = Path(folder)
        try:
            # checkpoints written before checksums were recorded have none to verify
            state = read_json_object(folder / STATE_FILE)
            if verify:
                verify_listed(folder, state.get("checksums", {}), STATE_FILE)
            config = read_config(folder)
            if verify:
                verify_listed(folder, config.get("checksums", {}), CONFIG_FILE)
            step = int(state["step"])
        except (CorruptFileError, ValueError, FileNotFoundError) as e:
            raise BrokenCheckpoint(str(e)) from None
        except (KeyError, TypeError) as e:
            raise BrokenCheckpoint(f"{folder} lacks its record {e} (written by an older version, or damaged)") from None
        return cls(folder, step, config, state)

    def model_state(self, device: str = "cpu") -> dict[str, Any]:
        return load(self.folder / MODEL_FILE, device)

    def optimizer_state(self) -> dict[str, Any]:
        """In the layout `Optimizer.load_state_dict` takes."""
        return {"arrays": load(self.folder / OPTIM_FILE), **self.state["optimizer"]}

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.load(self.folder / TOKENIZER_FILE)


def _remove(folder: Path) -> None:
    if folder.is_symlink():
        folder.unlink()                   # the link, never what it points to
        return
    # rename first: a folder half deleted by a crash must not look like a checkpoint
    trash = folder.with_name(f".del-{folder.name}-{os.getpid()}")
    os.replace(folder, trash)
    shutil.rmtree(trash)
