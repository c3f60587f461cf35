"""python -m gpt prepare --data PATH... --tokenizer ... --out DIR [options]"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..flags import build_parser
from .pipeline import prepare
from .settings import PrepareConfig

HELP = "filter, deduplicate, tokenize and shard a corpus into a folder train.py --data reads"


def add_data_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", metavar="PATH", default=argparse.SUPPRESS,
                        help="text files, .jsonl, .parquet (plain, .gz or .zst) or folders of them "
                             "(default: CPython's reference docs)")


def register(sub: Any) -> None:
    """The `prepare` subcommand of python -m gpt: its flags are PrepareConfig's fields."""
    flags = build_parser(PrepareConfig, "python -m gpt prepare", extra=add_data_flag)
    p = sub.add_parser("prepare", parents=[flags], add_help=False, help=HELP, description=PrepareConfig.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    given = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    if "data" in given:
        given["data"] = tuple(given["data"])
    try:
        prepare(PrepareConfig(**given))
    except ImportError as e:     # an optional package a flag needs
        sys.exit(f"error: {e}")
