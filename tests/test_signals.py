"""Signals and concurrent runs: SIGTERM saves like Ctrl-C, one run per output folder, a folder
holds one kind of thing, a full disk and a symlinked checkpoint are one clear line each."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_RUN, train_run, write_model_folder

import tinytensor.serialize
from bpe import Tokenizer
from gpt.train.checkpoint import Checkpoint, latest_checkpoint, list_checkpoints
from gpt.train.cli import main as gpt_cli
from gpt.train.folders import hold_output_folder

ROOT = Path(__file__).resolve().parents[1]
LONG = ["--max-iters", "100000", "--eval-interval", "100000", "--checkpoint-interval", "100000"]


def start(corpus: Path, out: Path, ranks: int = 1) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = (["mpiexec", "-n", str(ranks)] if ranks > 1 else []) + [
        sys.executable, str(ROOT / "train.py"), *TINY_RUN, "--data", str(corpus), "--out", str(out), *LONG]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=out.parent, env=env)


def wait_for_steps(run: subprocess.Popen, out: Path, steps: int = 2) -> None:
    """Until the run has logged `steps` training steps (it is in the loop, with work to lose)."""
    for _ in range(1200):
        if run.poll() is not None:
            pytest.fail(f"the run ended early: {run.stdout.read()}")
        log = out / "metrics.jsonl"
        if log.is_file() and sum('"loss"' in line for line in log.read_text().splitlines()) >= steps:
            return
        time.sleep(0.1)
    run.kill()
    pytest.fail("the run never logged a step")


# ---- SIGTERM saves like Ctrl-C ----------------------------------------------------------------
@pytest.mark.parametrize("ranks", [1, 2])
def test_sigterm_saves_after_the_step_and_exits_non_zero(corpus, tmp_path, ranks):
    if ranks > 1:
        if shutil.which("mpiexec") is None:
            pytest.skip("no mpiexec (pip install -e '.[mpi]')")
        pytest.importorskip("mpi4py")
    out = tmp_path / "out"
    run = start(corpus, out, ranks)
    wait_for_steps(run, out)
    run.send_signal(signal.SIGTERM)          # to train.py, or to mpiexec, which passes it to every rank
    try:
        said, _ = run.communicate(timeout=30)  # a scheduler would SIGKILL after its grace (often 10 s)
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail("SIGTERM did not stop the run")
    assert run.returncode == 128 + signal.SIGTERM, said
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and Checkpoint.read(ckpt).step >= 2
    assert f"SIGTERM: stopped at step {Checkpoint.read(ckpt).step}; saved {ckpt}" in said
    assert "Traceback" not in said


def test_sigterm_in_process_checkpoints_at_the_step_boundary(corpus, tmp_path, monkeypatch):
    import train

    real_clip, calls = train.optim.clip_grad_norm_, {"n": 0}

    def clip_then_terminate(params, max_norm):   # once per training step
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_clip(params, max_norm)

    monkeypatch.setattr(train.optim, "clip_grad_norm_", clip_then_terminate)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        train_run(corpus, tmp_path / "out", "--max-iters", "6", "--eval-interval", "100")
    assert stopped.value.code == 128 + signal.SIGTERM
    assert latest_checkpoint(tmp_path / "out").name == "step_000002"
    assert signal.getsignal(signal.SIGTERM) == before            # handler restored


# ---- one run per output folder --------------------------------------------------------------------
def test_a_second_run_into_the_same_folder_is_refused_naming_the_holder(corpus, tmp_path):
    out = tmp_path / "out"
    with hold_output_folder(out):
        with pytest.raises(SystemExit, match=rf"--out {out} is in use by another run \(pid {os.getpid()}\)"):
            train_run(corpus, out, "--max-iters", "1")
    train_run(corpus, out, "--max-iters", "1")                   # released with its holder


def test_the_lock_dies_with_its_process(corpus, tmp_path):
    out = tmp_path / "out"
    run = start(corpus, out)
    wait_for_steps(run, out, 1)
    with pytest.raises(SystemExit, match=rf"in use by another run \(pid {run.pid}\)"):
        train_run(corpus, out, "--max-iters", "1", "--resume")
    run.kill()                                                    # no cleanup runs: the OS drops the lock
    run.communicate()
    with hold_output_folder(out):
        pass


# ---- a folder holds one kind of thing ----------------------------------------------------------
def test_a_fine_tune_into_a_pretraining_run_is_refused(corpus, tmp_path):
    import train

    out = tmp_path / "run"
    train_run(corpus, out, "--max-iters", "1")
    before = (out / "metrics.jsonl").read_text()
    for extra in ([], ["--overwrite"]):
        with pytest.raises(SystemExit, match=rf"--out {out} already holds a pretraining run.*choose another --out"):
            train.main(["--task", "classify", "--init-from", str(tmp_path / "base"), "--data", str(corpus), "--out", str(out),
                        *extra])
    assert (out / "metrics.jsonl").read_text() == before and not (out / "config.json").exists()


def test_pretraining_into_a_model_folder_is_refused(corpus, tmp_path):
    write_model_folder(tmp_path / "m", Tokenizer())
    with pytest.raises(SystemExit, match="already holds a model, and a pretraining run written there would mix"):
        train_run(corpus, tmp_path / "m", "--max-iters", "1")


def test_export_into_a_run_or_over_a_model_is_refused_unless_overwrite(corpus, tmp_path):
    out = tmp_path / "run"
    train_run(corpus, out, "--max-iters", "1")
    with pytest.raises(SystemExit, match="already holds a pretraining run"):
        gpt_cli(["export", "--checkpoint", str(out), "--out", str(out)])
    assert not (out / "config.json").exists()
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "model.safetensors").write_bytes(b"someone's weights")
    (hf / "tokenizer.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"already holds a model: pass --overwrite to replace it"):
        gpt_cli(["export", "--checkpoint", str(out), "--out", str(hf)])
    assert (hf / "model.safetensors").read_bytes() == b"someone's weights"
    gpt_cli(["export", "--checkpoint", str(out), "--out", str(hf), "--overwrite"])
    assert (hf / "config.json").is_file()


# ---- a full disk, a symlinked checkpoint ------------------------------------------------------
def test_disk_full_while_saving_is_one_line_and_the_previous_checkpoint_survives(corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "2")
    real = tinytensor.serialize.write_atomically

    def full(path, blob):
        if Path(path).name == "optim.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, blob)

    monkeypatch.setattr(tinytensor.serialize, "write_atomically", full)
    with pytest.raises(SystemExit) as failed:
        train_run(corpus, out, "--max-iters", "4", "--resume")
    message = str(failed.value.code)
    assert "\n" not in message and "Traceback" not in message
    assert "the disk is full: writing optim.safetensors of the step-4 checkpoint" in message
    assert f"the previous checkpoint {out / 'ckpt' / 'step_000002'} is intact" in message
    assert "A checkpoint needs about" in message and "MiB" in message
    assert [p.name for p in list_checkpoints(out)] == ["step_000002"]
    assert not list((out / "ckpt").glob(".tmp-*"))
    Checkpoint.read(out / "ckpt" / "step_000002")


def test_a_symlinked_checkpoint_does_not_crash_pruning(corpus, tmp_path):
    out = tmp_path / "out"
    flags = ["--checkpoint-interval", "1", "--eval-interval", "100", "--lr-decay-iters", "6"]
    train_run(corpus, tmp_path / "elsewhere", "--max-iters", "1", *flags)
    train_run(corpus, out, "--max-iters", "1", *flags)
    target = tmp_path / "elsewhere" / "ckpt" / "step_000001"
    (out / "ckpt" / "step_000000").symlink_to(target, target_is_directory=True)
    train_run(corpus, out, "--max-iters", "4", "--resume", "--checkpoint-interval", "1")
    assert [p.name for p in list_checkpoints(out)] == ["step_000003", "step_000004"]
    assert Checkpoint.read(target).step == 1                    # what the link pointed to is untouched


def test_disk_full_outside_a_checkpoint_is_one_line(corpus, tmp_path, monkeypatch):
    import train

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(train, "write_json", full)           # run.json, the first file a run writes
    with pytest.raises(SystemExit, match=r"the disk is full: writing .*run\.json failed \(No space left on device\)"):
        train_run(corpus, tmp_path / "out", "--max-iters", "1")


def test_sigterm_during_a_fine_tune_saves_the_model_and_exits_non_zero(tmp_path, monkeypatch, capsys):
    import train

    import tinytensor.optim
    from gpt.train.folders import load_finetuned

    write_model_folder(tmp_path / "base", Tokenizer(special_tokens=["<|endoftext|>"]))
    data = tmp_path / "d.tsv"
    data.write_text("".join(f"{'ab'[i % 2]}\ttext number {i}\n" for i in range(40)))
    real_clip, calls = tinytensor.optim.clip_grad_norm_, {"n": 0}

    def clip_then_terminate(params, max_norm):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_clip(params, max_norm)

    monkeypatch.setattr(tinytensor.optim, "clip_grad_norm_", clip_then_terminate)
    out = tmp_path / "clf"
    with pytest.raises(SystemExit) as stopped:
        train.main(["--task", "classify", "--init-from", str(tmp_path / "base"), "--data", str(data), "--out", str(out),
                    "--epochs", "5", "--eval-interval", "0", "--batch-size", "4"])
    assert stopped.value.code == 128 + signal.SIGTERM
    assert "SIGTERM: stopped at step 2 of" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["final"]["stopped_by"] == "SIGTERM"
    assert load_finetuned(out)[2]["task"] == "classify"
