"""BENCH_QUICK=1 in the environment: every bench script runs a tiny configuration of its own
code in a few seconds, without ../shared and without torch (the optional comparisons are
skipped), so that tests/test_bench.py notices when a move or a rename breaks one.

    from bench_quick import QUICK, quick_defaults     (bench/ is on sys.path: the script's folder)
    quick_defaults(parser, steps=2)                   argparse defaults for the quick mode
"""
from __future__ import annotations

import argparse
import os

QUICK = os.environ.get("BENCH_QUICK") == "1"


def quick_defaults(parser: argparse.ArgumentParser, **values: object) -> None:
    """In quick mode, these defaults replace the parser's (flags given still win)."""
    if QUICK:
        parser.set_defaults(**values)
