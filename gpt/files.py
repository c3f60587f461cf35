"""The file names of a model folder, and its JSON files read and written (shared by
gpt.pretrained, gpt.hf_llama and the training checkpoints)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinytensor.serialize import write_atomically

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


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
