"""Training checkpoints: everything needed to continue a run bit for bit.

    OUT/ckpt/step_000500/
        model.safetensors     the weights
        optim.safetensors     AdamW's moment arrays
        config.json           {"model": GPTConfig, "train": the run's settings}  (what inference reads)
        tokenizer.json
        state.json            step, optimizer counters, RNG states, data key; written last

A checkpoint is written into a hidden temporary folder and renamed into place
only once complete, so a crash mid-write leaves a `.tmp-*` folder that is never
taken for a checkpoint. The latest checkpoint is the highest-numbered complete
`step_*` folder; the older ones beyond `keep` are removed after a new one lands.
Nothing here unpickles: arrays are safetensors, everything else JSON.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpe import Tokenizer
from tinytensor import load, save
from tinytensor.serialize import fsync_dir, write_atomically

CKPT_DIR = "ckpt"
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
STATE_FILE = "state.json"


def step_folder(out: str | os.PathLike, step: int) -> Path:
    return Path(out) / CKPT_DIR / f"step_{step:06d}"


def save_checkpoint(out: str | os.PathLike, step: int, model_state: dict[str, Any], optim_state: dict[str, Any],
                    config: dict, state: dict, tokenizer: Tokenizer, keep: int = 2) -> Path:
    """Write the checkpoint of `step` under OUT/ckpt and return its folder.

    `optim_state` is an optimizer's `state_dict()`; its arrays go to safetensors,
    its counters and groups into state.json beside `state` (JSON-able: step, RNGs...).
    Keeps the newest `keep` checkpoints (at least the previous good one).
    """
    final = step_folder(out, step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    for leftover in [*root.glob(".tmp-*"), *root.glob(".del-*")]:
        shutil.rmtree(leftover, ignore_errors=True)   # from a run that crashed mid-write
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    tmp.mkdir()
    try:
        save(model_state, tmp / MODEL_FILE)
        save(optim_state["arrays"], tmp / OPTIM_FILE)
        write_json(tmp / CONFIG_FILE, config)
        tokenizer.save(tmp / TOKENIZER_FILE)
        full_state = {**state, "step": step,
                      "optimizer": {"scalars": optim_state["scalars"], "param_groups": optim_state["param_groups"]}}
        write_json(tmp / STATE_FILE, full_state)   # last: its presence marks the folder complete
        fsync_dir(tmp)
        if final.exists():
            # the same step saved again (a resumed run that had nothing left to do): move the old one aside
            _remove(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(out)[:-keep]:
        _remove(old)
    return final


def list_checkpoints(out: str | os.PathLike) -> list[Path]:
    """The complete checkpoints under OUT/ckpt, oldest first."""
    root = Path(out) / CKPT_DIR
    if not root.is_dir():
        return []
    folders = [p for p in root.glob("step_*") if p.name[5:].isdigit() and (p / STATE_FILE).is_file()]
    return sorted(folders, key=lambda p: int(p.name[5:]))


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under OUT/ckpt, or None."""
    found = list_checkpoints(out)
    return found[-1] if found else None


def resolve_checkpoint(folder: str | os.PathLike) -> Path:
    """A folder to load a model from: `folder` itself when it holds a config.json
    (a checkpoint or a Hugging Face folder), else the latest checkpoint of a
    training output folder."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist")
    if (path / CONFIG_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(
            f"{path} has no {CONFIG_FILE} and no checkpoints in {path / CKPT_DIR}: give a checkpoint folder "
            "or the --out folder of a training run"
        )
    return latest


@dataclass
class Checkpoint:
    folder: Path
    step: int
    config: dict   # config.json: {"model": ..., "train": ...}
    state: dict    # state.json

    @classmethod
    def read(cls, folder: str | os.PathLike) -> "Checkpoint":
        folder = Path(folder)
        state = json.loads((folder / STATE_FILE).read_text())
        config = json.loads((folder / CONFIG_FILE).read_text())
        return cls(folder, int(state["step"]), config, state)

    def model_state(self, device: str = "cpu") -> dict[str, Any]:
        return load(self.folder / MODEL_FILE, device)

    def optimizer_state(self) -> dict[str, Any]:
        """In the layout `Optimizer.load_state_dict` takes."""
        return {"arrays": load(self.folder / OPTIM_FILE), **self.state["optimizer"]}

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.load(self.folder / TOKENIZER_FILE)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """obj as indented JSON, written atomically."""
    write_atomically(path, json.dumps(obj, indent=2).encode())


def _remove(folder: Path) -> None:
    # rename first: a folder half deleted by a crash must not look like a checkpoint
    trash = folder.with_name(f".del-{folder.name}-{os.getpid()}")
    os.replace(folder, trash)
    shutil.rmtree(trash)
