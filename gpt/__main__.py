"""python -m gpt sample | classify | chat: see gpt/train/cli.py."""
from .train.cli import main

main()
