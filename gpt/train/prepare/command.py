"""python -m gpt prepare --data PATH... --tokenizer ... --out DIR [options]"""
from __future__ import annotations

from typing import Any

from ..flags import add_command
from .pipeline import prepare
from .settings import PrepareConfig

HELP = "filter, deduplicate, tokenize and shard a corpus into a folder train.py --data reads"


def register(sub: Any) -> None:
    """The `prepare` subcommand of python -m gpt: its flags are PrepareConfig's fields."""
    add_command(sub, "prepare", PrepareConfig, prepare, HELP)
