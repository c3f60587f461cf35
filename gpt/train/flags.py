"""Settings declared once: a dataclass field is the setting, its flag, its type, its default and its help.

    @dataclass(frozen=True)
    class MyConfig(Settings):                           # Settings: every value validated when one is made
        lr: float = setting(1e-3, "peak learning rate", group="optimisation", check=positive)

    parser = build_parser(MyConfig, prog="train.py")   # --lr, typed, grouped, "(default: 0.001)" in its help
    given = parse_given(parser, argv)                   # only the flags on the command line: {"lr": 0.01}
    cfg = MyConfig(**given)                             # the dataclass validates every value

add_settings fills a subcommand's parser the same way (python -m gpt's commands,
gpt/train/cli.py). A flag several classes share is declared once with flag(), and
each class gives it its own default. A field's flag is its name with dashes
(`batch_size` -> `--batch-size`), unless it has a spelling of its own. Flags left out are absent from `given` rather than
set to their default, so a resumed run can tell "not given" from "given with the
default value".
"""
from __future__ import annotations

import argparse
import functools
import inspect
import math
import types
import typing
from dataclasses import Field, dataclass, field, fields
from typing import Any, Callable

Check = Callable[[Any], str | None]   # the problem with a value, or None when it is fine


def setting(default: Any, help: str, *, group: str | None = None, choices: tuple[str, ...] | None = None,
            check: Check | None = None, required: bool = False, default_text: str | None = None,
            on_resume: bool = False, parse: Callable[[str], Any] | None = None, nargs: str | None = None,
            metavar: str | None = None, positional: bool = False, one_of: str | None = None,
            spelling: str | None = None) -> Any:
    """A dataclass field that is also a command-line flag.

    check: returns what is wrong with a value (see positive, at_least, ...); every
    float is also required to be finite. required: the flag must be given.
    default_text: how --help shows the default, when the value itself would mislead.
    on_resume: a resumed pretraining run may change it (see gpt.train.pretrain).
    parse: turns the flag's text into its value, refusing what it cannot be (an
    argparse type, such as non_negative_seed); the field's type by default.
    nargs, metavar: as argparse has them; a list given is kept as a tuple.
    positional: an argument without a dash (`text`, not `--text`).
    one_of: the name of a set of flags of which exactly one must be given.
    spelling: the flag, where it is not the field's name with dashes (nanoGPT's
    --max-iters for the field max_steps: the code says "step" throughout).
    """
    meta = {"help": help, "group": group, "choices": choices, "check": check, "required": required,
            "default_text": default_text, "on_resume": on_resume, "parse": parse, "nargs": nargs,
            "metavar": metavar, "positional": positional, "one_of": one_of, "spelling": spelling}
    return field(default=default, metadata=meta)


def flag(help: str, **meta: Any) -> Callable[..., Any]:
    """A setting that several settings classes have, declared once: its help, checks and
    choices here, and each class its own default where it uses it:

        DEVICE = flag("where the arrays live", choices=("cpu", "cuda"))
        device: str = DEVICE("cpu")                  # in each class
    """
    return functools.partial(setting, help=help, **meta)


@dataclass(frozen=True)
class Settings:
    """A base for settings classes: every value is validated when one is made."""

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def flag_name(name: str, config_cls: Any = None) -> str:
    """The flag of field `name` (of `config_cls`, where it may be spelled otherwise)."""
    for f in fields(config_cls) if config_cls is not None else ():
        if f.name == name and f.metadata.get("spelling"):
            return f.metadata["spelling"]
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
                raise ValueError(f"{flag_name(f.name, config)} is required")
            continue
        problem = None
        if isinstance(value, float) and not math.isfinite(value):
            problem = "must be a finite number"
        elif f.metadata.get("choices") and value not in f.metadata["choices"]:
            problem = f"must be one of {', '.join(f.metadata['choices'])}"
        elif f.metadata.get("check"):
            problem = f.metadata["check"](value)
        if problem:
            raise ValueError(f"{flag_name(f.name, config)} {problem}, got {value!r}")


# ---- the parser ----------------------------------------------------------------------
def _base_type(hint: Any) -> Any:
    """int for `int | None`, and so on."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def _shows_default(f: Field, kind: Any) -> bool:
    """A required flag, one of a set, and an off-by-default switch have no default to show."""
    meta = f.metadata
    return not (meta["required"] or meta["one_of"] or (kind is bool and f.default is False))


def _value_type(meta: Any, kind: Any) -> Callable[[str], Any]:
    """What turns a flag's text into its value: `parse`, else the field's type; a tuple's
    values come as separate arguments (with nargs) or as one comma-separated argument."""
    if meta["parse"]:
        return meta["parse"]
    if typing.get_origin(kind) is tuple:
        return typing.get_args(kind)[0] if meta["nargs"] else _comma_list
    return kind


def _add_flag(parser: Any, f: Field, hint: Any) -> None:
    meta, kind = f.metadata, _base_type(hint)
    kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": meta["help"]}
    if _shows_default(f, kind):
        kw["help"] += f" (default: {meta['default_text'] or f.default})"
    if kind is bool:
        # --x and --no-x, unless the default is False (then --x alone); None: a default decided later
        kw["action"] = argparse.BooleanOptionalAction if f.default is not False else "store_true"
    else:
        comma_list = typing.get_origin(kind) is tuple and not meta["nargs"]
        kw.update(type=_value_type(meta, kind), choices=meta["choices"], nargs=meta["nargs"],
                  metavar=meta["metavar"] or ("A,B,..." if comma_list else None))
        if not meta["positional"]:
            kw["required"] = meta["required"]
    name = f.name if meta["positional"] else meta["spelling"] or flag_name(f.name)
    if not meta["positional"]:
        kw["dest"] = f.name                              # the field, whatever the flag's spelling
        if kind is not bool and not kw["metavar"] and not kw["choices"]:
            kw["metavar"] = name[2:].replace("-", "_").upper()
    parser.add_argument(name, **kw)


def add_settings(parser: argparse.ArgumentParser, config_cls: type) -> argparse.ArgumentParser:
    """Fill `parser` (a parser or a subcommand's) with one flag per field of `config_cls`
    that is a setting, in argument groups by the fields' `group`."""
    hints = typing.get_type_hints(config_cls)
    groups: dict[str | None, Any] = {None: parser}
    sets: dict[str, Any] = {}           # one_of -> its mutually exclusive group
    flags = [f for f in fields(config_cls) if "help" in f.metadata]
    # the ungrouped flags first, then group by group: the usage line lists them as --help does
    order = list(dict.fromkeys([None] + [f.metadata["group"] for f in flags]))
    for f in sorted(flags, key=lambda f: order.index(f.metadata["group"])):
        group = f.metadata["group"]
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        target = groups[group]
        one_of = f.metadata["one_of"]
        if one_of:
            if one_of not in sets:
                sets[one_of] = target.add_mutually_exclusive_group(required=True)
            target = sets[one_of]
        _add_flag(target, f, hints[f.name])
    return parser


def build_parser(config_cls: type, prog: str, description: str = "",
                 parents: tuple[argparse.ArgumentParser, ...] = ()) -> argparse.ArgumentParser:
    """An ArgumentParser with the flags of `config_cls` (see add_settings), after those of `parents`."""
    parser = argparse.ArgumentParser(prog=prog, description=inspect.cleandoc(description), parents=list(parents),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_settings(parser, config_cls)


def add_command(sub: Any, name: str, config_cls: type, run: Callable[[Any], Any], help: str) -> None:
    """The subcommand `name` of `sub` (a parser's add_subparsers()), its flags the fields of
    `config_cls` and its description the class's docstring. Parsed, it holds `func` (run)
    and `settings` (config_cls), to be made from given_in(args) and passed to run."""
    parser = sub.add_parser(name, help=help, description=inspect.cleandoc(config_cls.__doc__ or ""),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings(parser, config_cls).set_defaults(func=run, settings=config_cls)


def given_in(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings in parsed `args`, as field name -> value, less the entries named in `skip`."""
    return {name: tuple(value) if isinstance(value, list) else value
            for name, value in vars(args).items() if name not in skip}


def parse_given(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict[str, Any]:
    """The flags given on the command line, as field name -> value."""
    return given_in(parser.parse_args(argv))


def non_negative_seed(text: str) -> int:
    """--seed: a whole number >= 0 (NumPy's generators take no negative seed)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value
