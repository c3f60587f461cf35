"""The output folder of a run, checked before any work is done: a run that cannot
save must fail in its first second, not after hours of training."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def check_output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create `path` if needed and prove a file can be written in it; otherwise
    raise ValueError naming the flag, the folder and the reason."""
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
