"""Settings declared once: a dataclass field is the setting, its flag, its type, its default and its help.

    @dataclass(frozen=True)
    class MyConfig:
        lr: float = setting(1e-3, "peak learning rate", group="optimisation", check=positive)

    parser = build_parser(MyConfig, prog="train.py")   # --lr, typed, grouped, "(default: 0.001)" in its help
    given = parse_given(parser, argv)                   # only the flags on the command line: {"lr": 0.01}
    cfg = MyConfig(**given)                             # the dataclass validates every value

A field's flag is its name with dashes (`max_iters` -> `--max-iters`). Flags left
out are absent from `given` rather than set to their default, so a resumed run
can tell "not given" from "given with the default value".
"""
from __future__ import annotations

import argparse
import math
import types
import typing
from dataclasses import Field, field, fields
from typing import Any, Callable

Check = Callable[[Any], str | None]   # the problem with a value, or None when it is fine


def setting(default: Any, help: str, *, group: str | None = None, choices: tuple[str, ...] | None = None,
            check: Check | None = None, required: bool = False, default_text: str | None = None,
            on_resume: bool = False) -> Any:
    """A dataclass field that is also a command-line flag.

    check: returns what is wrong with a value (see positive, at_least, ...); every
    float is also required to be finite. required: the flag must be given.
    default_text: how --help shows the default, when the value itself would mislead.
    on_resume: a resumed pretraining run may change it (see gpt.train.pretrain).
    """
    meta = {"help": help, "group": group, "choices": choices, "check": check, "required": required,
            "default_text": default_text, "on_resume": on_resume}
    return field(default=default, metadata=meta)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


# ---- checks: each returns what is wrong, or None -----------------------------------
def positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def at_least(n: int) -> Check:
    return lambda v: None if v >= n else f"must be at least {n}"


def fraction(v: float) -> str | None:
    return None if 0 < v < 1 else "must be between 0 and 1 (exclusive)"


def probability(v: float) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def validate(config: Any) -> None:
    """Raise ValueError naming the flag and the value for every setting its check refuses."""
    for f in fields(config):
        value = getattr(config, f.name)
        if value is None:
            if f.metadata.get("required"):
                raise ValueError(f"{flag_name(f.name)} is required")
            continue
        problem = None
        if isinstance(value, float) and not math.isfinite(value):
            problem = "must be a finite number"
        elif f.metadata.get("choices") and value not in f.metadata["choices"]:
            problem = f"must be one of {', '.join(f.metadata['choices'])}"
        elif f.metadata.get("check"):
            problem = f.metadata["check"](value)
        if problem:
            raise ValueError(f"{flag_name(f.name)} {problem}, got {value!r}")


# ---- the parser ----------------------------------------------------------------------
def _base_type(hint: Any) -> Any:
    """int for `int | None`, and so on."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def _add_flag(parser: Any, f: Field, hint: Any) -> None:
    meta, kind = f.metadata, _base_type(hint)
    shown = meta["default_text"] or f.default
    kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": meta["help"]}
    if kind is bool:
        # --x and --no-x, unless the default is False (then --x alone); None: a default decided later
        kw["action"] = argparse.BooleanOptionalAction if f.default is not False else "store_true"
        if f.default is not False:
            kw["help"] += f" (default: {shown})"
    else:
        if typing.get_origin(kind) is tuple:
            kw["type"], kw["metavar"] = _comma_list, "A,B,..."
        else:
            kw["type"] = kind
        kw["choices"] = meta["choices"]
        kw["required"] = meta["required"]
        if not meta["required"]:
            kw["help"] += f" (default: {shown})"
    parser.add_argument(flag_name(f.name), **kw)


def build_parser(config_cls: type, prog: str, description: str = "",
                 extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser with one flag per field of `config_cls`, in argument
    groups by the fields' `group`; `extra` may add flags that are not settings."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if extra is not None:
        extra(parser)
    hints = typing.get_type_hints(config_cls)
    groups: dict[str | None, Any] = {None: parser}
    for f in fields(config_cls):
        if "help" not in f.metadata:
            continue
        group = f.metadata["group"]
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        _add_flag(groups[group], f, hints[f.name])
    return parser


def parse_given(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict[str, Any]:
    """The flags given on the command line, as field name -> value."""
    return vars(parser.parse_args(argv))


def non_negative_seed(text: str) -> int:
    """--seed: a whole number >= 0 (NumPy's generators take no negative seed)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value
