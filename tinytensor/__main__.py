"""`python -m tinytensor check [--device cuda] [--only NAME] [--add MODULE]`:
the finite-difference check of every op's backward (see tinytensor/check.py).
`python -m tinytensor exercise [N | PATH] [--solution]`: check a backward
written by hand in an exercise of docs/exercises/ (see tinytensor/exercise.py)."""
from __future__ import annotations

import argparse
import sys

from .backend import DEVICES, cuda_is_available


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinytensor", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check every op's backward against finite differences (float64)")
    check.add_argument("--device", default="cpu", choices=DEVICES, help="where the inputs live (default: cpu)")
    check.add_argument("--only", metavar="TEXT", help="only the ops whose name contains TEXT (case-insensitive)")
    check.add_argument("--add", metavar="MODULE", action="append", default=[],
                       help="also check the OpChecks in MODULE's list CHECKS (an op of your own); repeatable")
    exercise = commands.add_parser("exercise", help="list the backprop exercises, or check one (docs/exercises/)")
    exercise.add_argument("which", nargs="?", metavar="N|PATH", help="an exercise's number, or an exercise file")
    exercise.add_argument("--solution", action="store_true", help="check the shipped solution of exercise N")
    args = parser.parse_args(argv)

    if args.command == "exercise":
        from .exercise import main as exercise_main
        return exercise_main(args.which, args.solution)

    from .check import CHECKS, extra_checks, report

    if args.device == "cuda" and not cuda_is_available():
        print("check: --device cuda needs CuPy and a visible NVIDIA GPU (pip install cupy-cuda12x)", file=sys.stderr)
        return 2
    checks = CHECKS + extra_checks(args.add)
    if args.only:
        checks = [c for c in checks if args.only.lower() in c.name.lower()]
        if not checks:
            print(f"check: no op's name contains {args.only!r}", file=sys.stderr)
            return 2
    return 0 if report(checks, args.device) else 1


if __name__ == "__main__":
    sys.exit(main())
