"""Faults and bad input: corrupted checkpoints, torn logs, exploding losses, unwritable outputs, bad values."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import train_run, write_model_folder

import tinytensor as tt
from bpe import Tokenizer
from gpt import GPT, GPTClassifier, GPTConfig
from gpt.train.checkpoint import BrokenCheckpoint, Checkpoint, latest_checkpoint, list_checkpoints
from gpt.train.cli import main as gpt_cli
from gpt.train.settings import ClassifyConfig
from gpt.train.finetune import finetune_classifier
from gpt.train.inference import load_base, load_for_inference
from gpt.train.loop import Diverged
from gpt.train.metrics import perplexity
from tinytensor.serialize import CorruptFileError


def flip_byte(path: Path, offset_from_end: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def weights(folder: Path) -> dict:
    return Checkpoint.read(folder).model_state()


# ---- checkpoints that cannot load corrupted ----------------------------------------------
def test_a_flipped_byte_is_an_error_naming_the_file_on_every_load(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "2")
    ckpt = latest_checkpoint(out)
    flip_byte(ckpt / "model.safetensors")
    with pytest.raises(BrokenCheckpoint, match=r"model\.safetensors is corrupt: its sha256 differs"):
        Checkpoint.read(ckpt)
    with pytest.raises(CorruptFileError, match=r"model\.safetensors is corrupt"):
        GPT.from_pretrained(ckpt)
    for load in (load_for_inference, load_base):            # sample, chat, fine-tune --init-from
        with pytest.raises(ValueError, match=r"model\.safetensors is corrupt"):
            load(ckpt)
    with pytest.raises(SystemExit, match=r"model\.safetensors is corrupt"):
        gpt_cli(["sample", "--checkpoint", str(ckpt), "--max-new-tokens", "2"])
    # the only checkpoint is broken: resuming is an error, and nothing is deleted
    with pytest.raises(SystemExit, match="no good checkpoint"):
        train_run(corpus, out, "--max-iters", "4", "--resume")
    assert "skipping the broken checkpoint" in capsys.readouterr().out
    assert (out / "ckpt" / f"broken-{ckpt.name}" / "model.safetensors").is_file()


@pytest.mark.parametrize("damage", ["truncate optim", "drop config", "garbage state"])
def test_a_broken_newest_checkpoint_falls_back_to_the_previous_one(corpus, tmp_path, capsys, damage):
    flags = ["--checkpoint-interval", "2", "--eval-interval", "100", "--lr-decay-iters", "6"]
    train_run(corpus, tmp_path / "straight", "--max-iters", "6", *flags)
    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "4", *flags)
    newest = latest_checkpoint(out)
    assert newest.name == "step_000004"
    if damage == "truncate optim":
        optim_file = newest / "optim.safetensors"
        optim_file.write_bytes(optim_file.read_bytes()[:-100])
        reason = r"optim\.safetensors is truncated or corrupt: it has [\d,]+ bytes, [\d,]+ were written"
    elif damage == "drop config":
        (newest / "config.json").unlink()
        reason = r"config\.json is missing"
    else:
        (newest / "state.json").write_text("{not json")
        reason = r"state\.json is not valid JSON"
    capsys.readouterr()

    # an explicitly named broken checkpoint is an error, not a fallback
    with pytest.raises(SystemExit, match=reason):
        gpt_cli(["sample", "--checkpoint", str(newest), "--max-new-tokens", "2"])
    # the run folder: sample says so and uses step 2
    gpt_cli(["sample", "--checkpoint", str(out), "--max-new-tokens", "2", "--seed", "0"])
    said = capsys.readouterr().out
    assert "skipping the broken checkpoint" in said and "previous good checkpoint, step 2" in said
    # and resume continues from step 2, to the same weights as a run that never broke
    train_run(corpus, out, "--max-iters", "6", "--resume", *flags[:2])
    assert [p.name for p in list_checkpoints(out)] == ["step_000004", "step_000006"]
    a, b = weights(latest_checkpoint(out)), weights(latest_checkpoint(tmp_path / "straight"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_torn_metrics_line_is_skipped_on_resume(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "2", "--eval-interval", "100")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 4.')               # a crash mid-write
    train_run(corpus, out, "--max-iters", "3", "--resume")
    assert "cut off mid-write" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    (out / "metrics.jsonl").write_text('{"step": 1}\n{broken\n{"step": 2}\n')   # not the last line: an error
    with pytest.raises(SystemExit, match=r"metrics\.jsonl, line 2: not valid JSON"):
        train_run(corpus, out, "--max-iters", "4", "--resume")


def test_an_exploding_loss_stops_the_run_like_nan(corpus, tmp_path, monkeypatch, device):
    import train

    class Exploding(train.GPT):
        def forward(self, idx, targets=None, **kw):
            out = super().forward(idx, targets, **kw)
            return (out[0], out[1] * 1e6) if targets is not None and self.training else out

    monkeypatch.setattr(train, "GPT", Exploding)
    with pytest.raises(SystemExit, match=r"the loss became [\d.]+e\+0\d at step 1.*no checkpoint"):
        train_run(corpus, tmp_path / "out", "--max-iters", "3", "--eval-interval", "100", "--device", device)
    assert perplexity(800.0) == math.inf and perplexity(1.0) == pytest.approx(math.e)
    assert issubclass(Diverged, RuntimeError)


def test_resume_past_the_schedule_says_where_it_ends(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "2")
    capsys.readouterr()
    train_run(corpus, out, "--max-iters", "3", "--resume")
    assert "schedule ends at step 2 (--lr-decay-iters" in capsys.readouterr().out


# ---- outputs checked before any work -------------------------------------------------------
@pytest.mark.parametrize("where", ["a file", "/proc"])
def test_an_unwritable_out_fails_before_any_work(tmp_path, where):
    bad = tmp_path / "taken" if where == "a file" else Path("/proc/no-such-folder/run")
    if where == "a file":
        bad.write_text("not a folder")
    reason = "is an existing file" if where == "a file" else "cannot be written"
    # the data and the model do not exist: an error about them would mean work began before the check
    missing = str(tmp_path / "missing")
    with pytest.raises(SystemExit, match=f"--out {bad} {reason}"):
        train_run(Path(missing), bad)
    for task in ("classify", "instruct"):
        import train

        with pytest.raises(SystemExit, match=f"--out {bad} {reason}"):
            train.main(["--task", task, "--init-from", missing, "--data", missing, "--out", str(bad)])


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write to read-only folders")
def test_a_read_only_out_fails_before_any_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit, match=f"--out {locked / 'run'} cannot be written"):
            train_run(tmp_path / "missing", locked / "run")
    finally:
        locked.chmod(0o700)


# ---- values that are never checked -------------------------------------------------------
@pytest.mark.parametrize("value, problem", [("nan", "must be a finite number"), ("inf", "must be a finite number"),
                                            ("-1", "must be > 0")])
def test_bad_learning_rates_name_the_flag_and_value(corpus, tmp_path, value, problem):
    import train

    with pytest.raises(SystemExit, match=f"--lr {problem}, got {float(value)}"):
        train_run(corpus, tmp_path / "out", "--lr", value)
    with pytest.raises(SystemExit, match=f"--lr {problem}, got {float(value)}"):
        train.main(["--task", "classify", "--init-from", "x", "--data", "y", "--lr", value])
    with pytest.raises(ValueError, match=f"--lr {problem}"):
        ClassifyConfig(init_from="x", data="y", lr=float(value))


def test_generation_settings_are_checked_at_the_api_and_the_cli(tmp_path):
    tok = Tokenizer(special_tokens=["<|endoftext|>"])
    model = write_model_folder(tmp_path / "m", tok)
    for kw, match in ((dict(temperature=float("nan")), "temperature must be a finite number"),
                      (dict(max_new_tokens=-1), "max_new_tokens must be a whole number >= 0"),
                      (dict(top_p=float("nan")), "top_p must be in")):
        args = {"max_new_tokens": 3, **kw}
        with pytest.raises(ValueError, match=match):
            model.generate([[1, 2]], **args)
    with pytest.raises(ValueError, match="the token ids are empty"):
        model.generate([[]], 3)
    with pytest.raises(SystemExit, match="temperature must be a finite number"):
        gpt_cli(["sample", "--checkpoint", str(tmp_path / "m"), "--temperature", "nan"])
    with pytest.raises(SystemExit, match="max_new_tokens must be a whole number"):
        gpt_cli(["sample", "--checkpoint", str(tmp_path / "m"), "--max-new-tokens", "-2"])


def _train_tiny_classifier(tmp_path):
    """A two-label classifier, one epoch on 20 lines, in tmp_path/clf (its base in tmp_path/base)."""
    tok = Tokenizer(special_tokens=["<|endoftext|>"])
    write_model_folder(tmp_path / "base", tok)
    data = tmp_path / "d.tsv"
    data.write_text("".join(f"{'ab'[i % 2]}\ttext number {i}\n" for i in range(20)))
    finetune_classifier(ClassifyConfig(init_from=str(tmp_path / "base"), data=str(data), out=str(tmp_path / "clf"),
                                       epochs=1, eval_interval=0), say=lambda s: None)


def test_sample_on_a_classifier_points_to_classify(tmp_path):
    _train_tiny_classifier(tmp_path)
    assert isinstance(load_for_inference(tmp_path / "clf")[0], GPTClassifier)
    with pytest.raises(SystemExit, match="holds a classifier.*python -m gpt classify"):
        gpt_cli(["sample", "--checkpoint", str(tmp_path / "clf")])
    with pytest.raises(ValueError, match="holds a classifier"):
        GPT.from_pretrained(tmp_path / "clf")
    flip_byte(tmp_path / "clf" / "model.safetensors")
    with pytest.raises(SystemExit, match=r"model\.safetensors is corrupt"):
        gpt_cli(["classify", "--checkpoint", str(tmp_path / "clf"), "some text"])


def test_non_utf8_fine_tuning_data_names_the_file_and_line(tmp_path):
    tok = Tokenizer(special_tokens=["<|endoftext|>"])
    write_model_folder(tmp_path / "base", tok)
    data = tmp_path / "d.tsv"
    data.write_bytes(b"a\tfine\nb\tbad \xff byte\n")
    with pytest.raises(ValueError, match=r"d\.tsv is not valid UTF-8: byte \d+ \(line 2, column 7\)"):
        finetune_classifier(ClassifyConfig(init_from=str(tmp_path / "base"), data=str(data),
                                           out=str(tmp_path / "out")), say=lambda s: None)


def test_from_pretrained_opens_our_own_checkpoints(corpus, tmp_path):
    train_run(corpus, tmp_path / "out", "--max-iters", "1")
    ckpt = latest_checkpoint(tmp_path / "out")
    model = GPT.from_pretrained(ckpt)
    saved = Checkpoint.read(ckpt).model_state()
    assert all(np.array_equal(model.state_dict()[k], v) for k, v in saved.items())
    assert model.config == GPTConfig.from_dict(json.loads((ckpt / "config.json").read_text())["model"])


# ---- in-place writes ----------------------------------------------------------------------
def test_tensor_has_no_untracked_in_place_operation():
    """Changing an input's .data between forward and backward silently changes the
    gradient (as in PyTorch, whose .data has the same hole; the README says which
    writes are safe). A Tensor method that writes in place would need a version
    counter checked in backward: this fails when one is added without it."""
    in_place = {name for name in dir(tt.Tensor) if name.endswith("_") and not name.startswith("__")}
    assert in_place == {"requires_grad_"}, f"in-place methods need version tracking: {in_place}"


def test_copying_a_run_keeps_its_checksums_valid(corpus, tmp_path):
    train_run(corpus, tmp_path / "out", "--max-iters", "1")
    shutil.copytree(tmp_path / "out", tmp_path / "copy")
    assert Checkpoint.read(latest_checkpoint(tmp_path / "copy")).step == 1


# ---- checks before work, and messages that name the fix -------------------------------------
def test_an_empty_out_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import train

    with pytest.raises(SystemExit, match="--out is empty: give the folder to write to"):
        train.main(["--data", str(tmp_path / "missing"), "--out", ""])
    assert list(tmp_path.iterdir()) == []


def test_min_lr_above_lr_names_both_flags(corpus, tmp_path):
    import train

    with pytest.raises(SystemExit, match=r"--min-lr \(0\.5\) is above --lr \(0\.001\)"):
        train_run(corpus, tmp_path / "out", "--lr", "1e-3", "--min-lr", "0.5")
    with pytest.raises(SystemExit, match=r"--min-lr \(0\.5\) is above --lr"):
        train.main(["--task", "classify", "--init-from", "x", "--data", "y", "--lr", "1e-3", "--min-lr", "0.5"])


def test_a_temperature_that_underflows_samples_the_greedy_token(tmp_path):
    from gpt.sampling import sample_next

    logits = np.array([[0.5, 3.0, -1.0, 2.9]])
    assert sample_next(logits, 1e-320, rng=np.random.default_rng(0))[0] == 1
    tok = Tokenizer(special_tokens=["<|endoftext|>"])
    model = write_model_folder(tmp_path / "m", tok)
    tiny = model.generate([[1, 2]], 6, temperature=1e-320, seed=0)
    greedy = model.generate([[1, 2]], 6, temperature=0)
    np.testing.assert_array_equal(tiny, greedy)


def test_resume_with_max_iters_below_the_checkpoint_is_refused(corpus, tmp_path):
    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "3")
    with pytest.raises(SystemExit, match=r"--max-iters 2 is below the checkpoint's step 3"):
        train_run(corpus, out, "--max-iters", "2", "--resume")


def test_a_negative_seed_names_the_flag(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit, match="--seed must be at least 0, got -1"):
        train_run(corpus, tmp_path / "out", "--seed", "-1")
    with pytest.raises(SystemExit):
        gpt_cli(["sample", "--checkpoint", str(tmp_path), "--seed", "-1"])
    assert "--seed: must be a whole number >= 0, got '-1'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpt_cli(["chat", "--checkpoint", str(tmp_path), "--seed", "-1"])
    assert "--seed: must be a whole number >= 0, got '-1'" in capsys.readouterr().err


def test_an_odd_sized_token_file_names_the_file_and_the_fix(corpus, tmp_path):
    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "1")
    (train_bin,) = (out / "data").glob("*/train_*.bin")
    with open(train_bin, "ab") as f:
        f.write(b"\0")                          # bytes tokens are uint16: one byte too many
    shutil.rmtree(out / "ckpt")
    with pytest.raises(SystemExit, match=rf"{train_bin} is truncated or corrupt: it has .* bytes, .* were written "
                                         rf"\(meta.json\); delete {out / 'data'} to rebuild it"):
        train_run(corpus, out, "--max-iters", "1")


def test_a_short_last_document_gets_advice_that_can_help(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a long first document. " * 50)
    (docs / "b.txt").write_text("tiny")
    with pytest.raises(SystemExit, match=r"whole documents from the end of the corpus .* put a longer document last"):
        train_run(docs, tmp_path / "out", "--max-iters", "1")


def test_a_subfolder_named_txt_in_the_data_folder_is_not_a_document(corpus, tmp_path):
    (corpus / "notes.txt").mkdir()
    train_run(corpus, tmp_path / "out", "--max-iters", "1")
    assert json.loads((tmp_path / "out" / "run.json").read_text())["data"]["documents_kept"] == 6


def test_device_cuda_without_cupy_is_one_line(corpus, tmp_path, monkeypatch):
    import sys

    from gpt.train import distributed

    monkeypatch.setattr(distributed, "cuda_is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", None)            # `import cupy` fails
    with pytest.raises(SystemExit, match=r"--device cuda needs CuPy and a CUDA GPU, and CuPy is not installed"):
        train_run(corpus, tmp_path / "out", "--device", "cuda")
    with pytest.raises(SystemExit, match=r"--device cuda needs CuPy"):
        gpt_cli(["sample", "--checkpoint", str(tmp_path / "missing"), "--device", "cuda"])


def test_sample_into_a_closed_pipe_ends_quietly(tmp_path):
    import subprocess
    import sys

    write_model_folder(tmp_path / "m", Tokenizer(special_tokens=["<|endoftext|>"]))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    run = subprocess.Popen([sys.executable, "-m", "gpt", "sample", "--checkpoint", str(tmp_path / "m"),
                            "--max-new-tokens", "100000", "--no-stop-at-eos", "--seed", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    run.stdout.read(1)                                         # `| head -c 1`
    run.stdout.close()
    err = run.stderr.read().decode()
    run.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert run.returncode == 141                               # 128 + SIGPIPE, as `cat` would end


def test_linear_of_no_features_is_a_clear_error():
    from tinytensor import nn

    with pytest.raises(ValueError, match=r"Linear needs in_features and out_features >= 1, got \(0, 3\)"):
        nn.Linear(0, 3)


def test_classify_from_stdin_prints_one_line_per_input_line(tmp_path, monkeypatch, capsys):
    import io

    _train_tiny_classifier(tmp_path)
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("first text\n\n   \nthird text\n"))
    gpt_cli(["classify", "--checkpoint", str(tmp_path / "clf")])
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 5 and lines[-1] == ""                 # four input lines, four output lines
    assert lines[1] == lines[2] == ""
    for line in (lines[0], lines[3]):
        label, prob = line.split("\t")
        assert label in ("a", "b") and 0.0 <= float(prob) <= 1.0


def test_a_checkpoint_naming_the_step_counts_as_iters_resumes(corpus, tmp_path):
    """Checkpoints written before the code said "step" throughout hold max_iters, warmup_iters,
    lr_decay_iters and eval_iters in config.json: they resume under the new names."""
    from gpt.train.checkpoint import CONFIG_FILE, STATE_FILE, digests

    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "2", "--warmup-iters", "1")
    folder = max((out / "ckpt").glob("step_*"))
    config = json.loads((folder / CONFIG_FILE).read_text())
    old = {"max_steps": "max_iters", "warmup_steps": "warmup_iters", "decay_steps": "lr_decay_iters",
           "eval_batches": "eval_iters"}
    config["train"] = {old.get(k, k): v for k, v in config["train"].items()}
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    state = json.loads((folder / STATE_FILE).read_text())
    state["checksums"] = digests(folder, (CONFIG_FILE,))
    (folder / STATE_FILE).write_text(json.dumps(state))
    train_run(corpus, out, "--max-iters", "3", "--resume")
    assert (out / "ckpt" / "step_000003").is_dir()
