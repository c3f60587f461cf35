"""Command line: train a tokenizer, encode stdin to ids, decode ids to text.

    python -m bpe train --input corpus.txt --vocab-size 4096 --out tok.bpe
    echo "hello world" | python -m bpe encode --tokenizer tok.bpe
    echo "hello world" | python -m bpe encode --tokenizer tok.bpe | python -m bpe decode --tokenizer tok.bpe
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .tokenizer import SpecialTokenError, Tokenizer


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except (OSError, ValueError) as exc:
        print(f"bpe {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bpe", description="Byte-level BPE tokenizer.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="learn a tokenizer from a UTF-8 text file")
    train.add_argument("--input", required=True, type=Path, help="training text (streamed, may be large)")
    train.add_argument("--vocab-size", required=True, type=int, help="total ids: 256 bytes + merges + special tokens")
    train.add_argument("--out", required=True, help="where to write the tokenizer")
    train.add_argument("--pattern", default="gpt2", help="'gpt2' (default), 'cl100k', 'o200k' or a regex")
    train.add_argument("--special", action="append", default=[], metavar="TOKEN", help="a special token (repeatable)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(run=_train)

    for name, run, help_text in (
        ("encode", _encode, "read text on stdin, write space-separated ids on stdout"),
        ("decode", _decode, "read whitespace-separated ids on stdin, write text on stdout"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--tokenizer", required=True, type=Path, help="a file written by 'train'")
        sub.set_defaults(run=run)
    commands.choices["encode"].add_argument(
        "--allow-special", action="store_true", help="encode special tokens in the text as their ids"
    )
    return parser


def _train(args: argparse.Namespace) -> None:
    out = _writable_file(args.out)  # before training, which may take hours
    tok = Tokenizer.train(args.input, args.vocab_size, args.special, args.pattern, progress=not args.quiet)
    tok.save(out)
    print(f"wrote {out}: {tok.vocab_size} ids", file=sys.stderr)


def _writable_file(out: str) -> Path:
    """`out` as a path a file can be written to, or ValueError saying why not."""
    if not out.strip():
        raise ValueError("--out is empty: give the path of the tokenizer file to write, e.g. --out tok.bpe")
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder: give a file path in it, e.g. --out {path / 'tok.bpe'}")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"--out {out}: the folder {folder} does not exist (create it first)")
    try:  # the save writes a temporary file there, then renames it
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot write a file in {folder} ({exc.strerror})") from None
    return path


def _encode(args: argparse.Namespace) -> None:
    tok = Tokenizer.load(args.tokenizer)
    text = sys.stdin.buffer.read().decode("utf-8")
    try:
        ids = tok.encode(text, allowed_special="all" if args.allow_special else "none_raise")
    except SpecialTokenError as exc:
        raise ValueError(
            f"the input contains the special token {exc.token!r} at character {exc.index}; "
            f"pass --allow-special to encode special tokens as their ids"
        ) from None
    sys.stdout.write(" ".join(map(str, ids)) + "\n")


def _decode(args: argparse.Namespace) -> None:
    tok = Tokenizer.load(args.tokenizer)
    ids = []
    for number, field in enumerate(sys.stdin.read().split(), start=1):
        if not field.isdigit():  # int() would also take "+1", "1_0" and "١"
            raise ValueError(f"token {number} on stdin is {field[:40]!r}, not a token id: expected whitespace-separated integers")
        ids.append(int(field))
    sys.stdout.buffer.write(tok.decode_bytes(ids))
