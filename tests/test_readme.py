"""Every train.py and python -m gpt command the README shows parses as written: no flag was lost in a reshape."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import train
from gpt.train.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def commands(prefix: str) -> list[list[str]]:
    """The arguments of every README shell command that starts with `prefix`, continuations joined."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()       # a comment after the command
            if line.startswith(prefix):
                found.append(shlex.split(line)[len(shlex.split(prefix)):])
    return found


def test_the_readme_shows_training_and_sampling_commands():
    assert len(commands("python train.py")) >= 6 and len(commands("python -m gpt")) >= 3


@pytest.mark.parametrize("argv", commands("python train.py"), ids=lambda a: " ".join(a)[:60])
def test_train_py_commands_parse(argv):
    task, given = train.parse(argv)
    settings = train.CONFIGS[task].__dataclass_fields__
    assert set(given) <= set(settings)


@pytest.mark.parametrize("argv", commands("python -m gpt"), ids=lambda a: " ".join(a)[:60])
def test_gpt_cli_commands_parse(argv):
    assert build_parser().parse_args(argv).func is not None
