"""Every flag of train.py and python -m gpt is declared once: each command's defaults are the tables
below, a flag several commands share says the same thing in each of them, and a bad --seed or
--device is refused by every command that takes one."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

import train
from gpt.train import cli
from gpt.train.settings import CONFIGS
from gpt.train.flags import build_parser

ROOT = Path(__file__).resolve().parents[1]
TUNE_REQUIRED = ["--init-from", "base", "--data", "d.json"]

# ---- each command's defaults, written out (the values the commands had before their flags were generated) ----
FINETUNE = {"init_from": "base", "data": "d.json", "overwrite": False, "epochs": 3, "batch_size": 8, "grad_accum": 1,
            "lr": 5e-05, "min_lr": None, "warmup_steps": 0, "weight_decay": 0.1, "grad_clip": 1.0, "max_length": None,
            "eval_interval": 50, "eval_batches": 5, "seed": 123, "device": "cpu", "lora_rank": 0, "lora_alpha": 16.0,
            "merge_lora": False}
TRAIN_DEFAULTS = {
    "pretrain": {"data": None, "errors": "strict", "tokenizer": None, "vocab_size": 1024, "gpt2_vocab": None,
                 "val_fraction": 0.1, "cache_dir": None, "sampling": "random", "preset": "nano", "n_layer": 4,
                 "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0, "bias": True, "batch_size": 32,
                 "grad_accum": 1, "max_steps": 500, "lr": 0.002, "min_lr": 0.0002, "warmup_steps": 50,
                 "decay_steps": 500, "weight_decay": 0.1, "beta2": 0.99, "grad_clip": 1.0, "eval_interval": 100,
                 "eval_batches": 20, "full_val": False, "sample_tokens": 120, "checkpoint_interval": 200, "out": "out",
                 "resume": False, "device": "cpu", "dtype": "float32", "seed": 1337, "plot": False,
                 "peak_flops": None, "profile": 0},
    "classify": {**FINETUNE, "out": "out/classify", "trainable": "last-block", "balance": False, "labels": None},
    "instruct": {**FINETUNE, "out": "out/instruct", "mask_prompt": False, "max_new_tokens": 256, "n_responses": None,
                 "prompt_template": None},
    "dpo": {**FINETUNE, "out": "out/dpo", "epochs": 1, "lr": 5e-06, "beta": 0.1, "cache_reference": False,
            "max_new_tokens": 256, "n_responses": None, "prompt_template": None, "plot": False},
}
GPT_DEFAULTS = {
    "sample": (["--checkpoint", "m"],
               {"checkpoint": "m", "prompt": "", "max_new_tokens": 200, "temperature": 0.8, "top_k": None,
                "top_p": None, "seed": None, "device": "cpu", "stop_at_eos": True}),
    "chat": (["--checkpoint", "m"],
             {"checkpoint": "m", "system": None, "input": "", "max_new_tokens": 256, "temperature": 0.0, "top_k": None,
              "top_p": None, "seed": None, "device": "cpu"}),
    "classify": (["--checkpoint", "m"], {"checkpoint": "m", "text": (), "device": "cpu"}),
    "export": (["--checkpoint", "m", "--out", "o"], {"checkpoint": "m", "out": "o", "overwrite": False}),
    "eval": (["--checkpoint", "m", "--data", "x"],
             {"checkpoint": "m", "data": "x", "val": False, "choices": None, "instruct": None, "context": None,
              "stride": None, "batch_size": 8, "limit": None, "max_new_tokens": 256, "prompt_template": None,
              "errors": "strict", "json": False, "device": "cpu"}),
    "harness": (["--checkpoint", "m", "--tasks", "a,b"],
                {"checkpoint": "m", "tasks": ("a", "b"), "include_path": None, "limit": None, "num_fewshot": None,
                 "batch_size": 8, "output": None, "device": "cpu"}),
    "prepare": (["--out", "o"],
                {"data": None, "out": "o", "overwrite": False, "errors": "skip", "split_text": None,
                 "text_field": "text", "tokenizer": "bpe", "vocab_size": 1024, "gpt2_vocab": None, "fix_text": False,
                 "lang": None, "lang_confidence": 0.5, "quality": False, "dedup": False, "near_dedup": False,
                 "near_threshold": 0.8, "val_fraction": 0.1, "overlap": True, "check_against": None,
                 "shard_tokens": 100_000_000, "progress": True}),
}


@pytest.mark.parametrize("task", TRAIN_DEFAULTS)
def test_train_py_defaults_are_the_table(task):
    parsed, given = train.parse(["--task", task, *([] if task == "pretrain" else TUNE_REQUIRED)])
    assert parsed == task
    assert CONFIGS[task](**given).to_dict() == TRAIN_DEFAULTS[task]


@pytest.mark.parametrize("command", GPT_DEFAULTS)
def test_gpt_command_defaults_are_the_table(command):
    argv, expected = GPT_DEFAULTS[command]
    _, settings = cli.parse([command, *argv])
    got = settings.to_dict()
    if command == "prepare":
        assert got.pop("workers") >= 1              # the machine's cores
    assert got == expected


@pytest.mark.parametrize("command, flag, default", [("sample", "--temperature", "0.8"),
                                                    ("sample", "--max-new-tokens", "200"),
                                                    ("chat", "--temperature", "0.0"),
                                                    ("chat", "--max-new-tokens", "256")])
def test_each_command_says_its_own_sampling_default(command, flag, default):
    assert option(parsers()[command], flag).help.endswith(f"(default: {default})")


# ---- a flag several commands share: the same help in each, unless it means another thing ----------------------
def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command line: 'train TASK' and python -m gpt's subcommands."""
    found = {f"train {task}": build_parser(cls, "train.py") for task, cls in CONFIGS.items()}
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {**found, **sub.choices}


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def meanings(flag: str) -> set[frozenset[str]]:
    """The commands taking `flag`, in sets by its help (less the default, which is each command's own)."""
    by_help: dict[str, set[str]] = {}
    for name, parser in parsers().items():
        if any(flag in a.option_strings for a in parser._actions):
            help = re.sub(r" \(default: .*\)$", "", option(parser, flag).help, flags=re.S)
            by_help.setdefault(help, set()).add(name)
    return {frozenset(names) for names in by_help.values()}


TRAIN = {"train pretrain", "train classify", "train instruct", "train dpo"}
TUNE = TRAIN - {"train pretrain"}
SHARED = {   # flag: the commands that take it, in sets that share one help (one meaning)
    "--device": [TRAIN | {"sample", "chat", "classify", "eval", "harness"}],
    "--seed": [TRAIN, {"sample", "chat"}],
    "--max-new-tokens": [{"sample", "chat"}, {"train instruct", "train dpo"}, {"eval"}],
    "--temperature": [{"sample", "chat"}],
    "--top-k": [{"sample", "chat"}],
    "--top-p": [{"sample", "chat"}],
    "--checkpoint": [{"sample", "eval", "export", "harness"}, {"classify"}, {"chat"}],
    "--errors": [{"train pretrain", "eval"}, {"prepare"}],
    "--batch-size": [TRAIN, {"eval"}, {"harness"}],
    "--grad-accum": [TRAIN],
    "--lr": [TRAIN],
    "--min-lr": [TRAIN],
    "--weight-decay": [TRAIN],
    "--grad-clip": [TRAIN],
    "--epochs": [TUNE],
    "--out": [{"train pretrain"}, TUNE, {"export"}, {"prepare"}],
    "--n-responses": [{"train instruct", "train dpo"}],
}


@pytest.mark.parametrize("flag", SHARED)
def test_a_shared_flag_has_one_help_per_meaning(flag):
    assert meanings(flag) == {frozenset(names) for names in SHARED[flag]}


def test_the_warmup_flags_share_their_help():
    helps = {re.sub(r" \(default: .*\)$", "", option(parsers()[name], flag).help)
             for name, flag in [("train pretrain", "--warmup-iters"), ("train classify", "--warmup-steps")]}
    assert helps == {"steps of linear warmup"}


def test_flags_are_written_by_gpt_train_flags_alone():
    """A hand-written add_argument is a second declaration waiting to drift; train.py's --task, which
    chooses the settings class, is the one exception."""
    sources = [ROOT / "train.py", *sorted((ROOT / "gpt" / "train").rglob("*.py"))]
    calls = {str(path.relative_to(ROOT)): path.read_text().count(".add_argument(") for path in sources}
    assert {path: n for path, n in calls.items() if n} == {"train.py": 1, "gpt/train/flags.py": 1}


# ---- a bad --seed or --device: refused by every command that takes one -------------------------------------------
def run_command(name: str, flags: list[str]) -> None:
    if name.startswith("train "):
        task = name.split()[1]
        train.main(["--task", task, *([] if task == "pretrain" else TUNE_REQUIRED), *flags])
    else:
        cli.main([name, *GPT_DEFAULTS[name][0], *flags])


def takers(flag: str) -> set[str]:
    return {name for name, parser in parsers().items() if any(flag in a.option_strings for a in parser._actions)}


def test_who_takes_seed_and_device():
    assert takers("--seed") == TRAIN | {"sample", "chat"}
    assert takers("--device") == TRAIN | {"sample", "chat", "classify", "eval", "harness"}


@pytest.mark.parametrize("flag, value", [("--seed", "-1"), ("--device", "tpu")])
@pytest.mark.parametrize("command", sorted(TRAIN | {"sample", "chat", "classify", "eval", "harness"}))
def test_a_bad_seed_or_device_is_refused_naming_the_flag(command, flag, value, tmp_path, monkeypatch, capsys):
    if command not in takers(flag):
        pytest.skip(f"{command} takes no {flag}")
    monkeypatch.chdir(tmp_path)                 # a command that got past its flags would write here
    with pytest.raises(SystemExit) as stopped:
        run_command(command, [flag, value])
    said = f"{stopped.value.code}\n{capsys.readouterr().err}"
    assert stopped.value.code != 0
    assert re.search(rf"{flag}:? .*{re.escape(repr(value) if flag == '--device' else value)}", said), said
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", sorted(TRAIN | {"sample", "chat"}))
def test_a_good_seed_is_taken(command):
    if command.startswith("train "):
        task = command.split()[1]
        _, given = train.parse(["--task", task, *([] if task == "pretrain" else TUNE_REQUIRED), "--seed", "7"])
        assert CONFIGS[task](**given).seed == 7
    else:
        assert cli.parse([command, *GPT_DEFAULTS[command][0], "--seed", "7"])[1].seed == 7
