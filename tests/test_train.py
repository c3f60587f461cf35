"""train.py: learning, bit-identical resume, NaN and Ctrl-C stops, crash-safe checkpoints, end to end."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train
from conftest import TINY_RUN, train_run
from gpt.train import checkpoint as gckpt
from gpt.train.checkpoint import Checkpoint, latest_checkpoint, list_checkpoints


ROOT = Path(__file__).resolve().parents[1]

def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def arrays_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_few_steps_reduce_the_loss(corpus, tmp_path, device):
    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "30", "--lr", "1e-2", "--eval-interval", "30", "--eval-iters", "4",
              "--device", device)
    evals = [m for m in metrics(out) if "val_loss" in m]
    assert [m["step"] for m in evals] == [0, 30]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0
    steps = [m for m in metrics(out) if "loss" in m]
    assert len(steps) == 30 and all(m["tokens_per_s"] > 0 and m["mfu"] > 0 for m in steps)
    # the resolved config, preset values included, is written beside the run
    run_cfg = json.loads((out / "run.json").read_text())
    assert run_cfg["train"]["n_layer"] == 1 and run_cfg["train"]["decay_steps"] == 30
    assert run_cfg["train"]["device"] == device
    assert run_cfg["model"]["vocab_size"] == 257 and run_cfg["model"]["n_embd"] == 16


def test_resume_is_bit_identical(corpus, tmp_path, device):
    flags = ["--lr-decay-iters", "6", "--dropout", "0.1", "--grad-accum", "2", "--eval-interval", "2",
             "--checkpoint-interval", "2", "--device", device]
    train_run(corpus, tmp_path / "straight", "--max-iters", "6", *flags)
    train_run(corpus, tmp_path / "stopped", "--max-iters", "3", *flags)
    assert latest_checkpoint(tmp_path / "stopped").name == "step_000003"
    train_run(corpus, tmp_path / "stopped", "--max-iters", "6", "--resume", "--device", device)

    a = Checkpoint.read(latest_checkpoint(tmp_path / "straight"))
    b = Checkpoint.read(latest_checkpoint(tmp_path / "stopped"))
    assert a.step == b.step == 6
    assert arrays_equal(a.model_state(), b.model_state())
    oa, ob = a.optimizer_state(), b.optimizer_state()
    assert arrays_equal(oa["arrays"], ob["arrays"]) and oa["scalars"] == ob["scalars"]
    assert a.state["rng"] == b.state["rng"]
    # the log of the resumed run reads like the uninterrupted one (plus the evaluation at the stop)
    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s", "mfu")} for r in rows]

    stopped, straight = strip(metrics(tmp_path / "stopped")), strip(metrics(tmp_path / "straight"))
    assert [r for r in stopped if not ("val_loss" in r and r["step"] == 3)] == straight


def test_a_checkpoint_written_on_the_cpu_resumes_on_each_device(corpus, tmp_path, device):
    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "2", "--checkpoint-interval", "2")
    train_run(corpus, out, "--max-iters", "4", "--resume", "--device", device)
    ckpt = Checkpoint.read(latest_checkpoint(out))
    assert ckpt.step == 4 and json.loads((out / "run.json").read_text())["train"]["device"] == device
    assert all(np.isfinite(w).all() for w in ckpt.model_state().values())
    assert sorted(ckpt.optimizer_state()["arrays"]) == sorted(
        Checkpoint.read(list_checkpoints(out)[0]).optimizer_state()["arrays"])


def test_resume_with_different_settings_names_the_differences(corpus, tmp_path):
    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "2")
    with pytest.raises(SystemExit, match=r"(?s)--n-embd: the checkpoint has 16, the command line 32.*--lr: the "
                                         r"checkpoint has 0\.002, the command line 0\.5"):
        train_run(corpus, out, "--resume", "--lr", "0.5", "--n-embd", "32", "--max-iters", "4")   # the last flag wins
    with pytest.raises(SystemExit, match="already holds a checkpoint"):
        train_run(corpus, out, "--max-iters", "2")
    with pytest.raises(SystemExit, match="no checkpoint"):
        train_run(corpus, tmp_path / "empty", "--resume")


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch, device):
    class NaNAtStep4(train.GPT):
        calls = 0

        def forward(self, idx, targets=None, **kw):
            out = super().forward(idx, targets, **kw)
            if targets is not None and self.training:
                NaNAtStep4.calls += 1
                if NaNAtStep4.calls == 4:
                    return out[0], out[1] * float("nan")
            return out

    monkeypatch.setattr(train, "GPT", NaNAtStep4)
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"loss became nan at step 4.*last good checkpoint is .*step_000002"):
        train_run(corpus, out, "--max-iters", "10", "--checkpoint-interval", "2", "--eval-interval", "100",
                  "--device", device)
    assert [p.name for p in list_checkpoints(out)] == ["step_000002"]
    weights = Checkpoint.read(latest_checkpoint(out)).model_state()
    assert all(np.isfinite(w).all() for w in weights.values())


def test_a_partial_checkpoint_is_never_the_latest(corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"
    train_run(corpus, out, "--max-iters", "4", "--checkpoint-interval", "2")
    good = latest_checkpoint(out)
    assert good.name == "step_000004"

    # a crash while writing the next checkpoint: the optimizer file fails halfway
    real_save = gckpt.save

    def crash(arrays, path, metadata=None):
        if Path(path).name == gckpt.OPTIM_FILE:
            Path(path).write_bytes(b"\x00" * 10)   # a torn file
            raise OSError("disk full")
        real_save(arrays, path, metadata)

    monkeypatch.setattr(gckpt, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        train_run(corpus, out, "--max-iters", "6", "--resume")
    monkeypatch.undo()
    assert latest_checkpoint(out) == good
    assert not [p for p in (out / "ckpt").iterdir() if p.name.startswith(".")]

    # leftovers of a hard crash (no cleanup ran): a temp folder and a step folder without state.json
    tmp = out / "ckpt" / ".tmp-step_000006-999"
    tmp.mkdir()
    (tmp / gckpt.MODEL_FILE).write_bytes(b"\x00")
    (out / "ckpt" / "step_000008").mkdir()
    (out / "ckpt" / "step_000008" / gckpt.MODEL_FILE).write_bytes(b"\x00")
    assert latest_checkpoint(out) == good
    train_run(corpus, out, "--max-iters", "6", "--resume")   # resumes from step 4 and cleans the temp folder
    assert latest_checkpoint(out).name == "step_000006" and not tmp.exists()


def test_ctrl_c_checkpoints_at_the_step_boundary(corpus, tmp_path, monkeypatch, device):
    flags = ["--lr-decay-iters", "6", "--eval-interval", "100", "--checkpoint-interval", "100", "--device", device]
    real_clip = train.optim.clip_grad_norm_
    calls = {"n": 0}

    def clip_then_interrupt(params, max_norm):   # called once per training step
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_clip(params, max_norm)

    out = tmp_path / "out"
    monkeypatch.setattr(train.optim, "clip_grad_norm_", clip_then_interrupt)
    with pytest.raises(SystemExit) as stopped:          # saved, but not finished: not a success
        train_run(corpus, out, "--max-iters", "6", *flags)
    assert stopped.value.code == 128 + signal.SIGINT
    monkeypatch.undo()
    assert latest_checkpoint(out).name == "step_000003"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored
    train_run(corpus, out, "--max-iters", "6", "--resume", "--device", device)
    train_run(corpus, tmp_path / "straight", "--max-iters", "6", *flags)
    a = Checkpoint.read(latest_checkpoint(out)).model_state()
    b = Checkpoint.read(latest_checkpoint(tmp_path / "straight")).model_state()
    assert arrays_equal(a, b)


def test_plot_without_matplotlib_says_so(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # makes `import matplotlib` fail
    train_run(corpus, tmp_path / "out", "--max-iters", "1", "--plot")
    assert "--plot needs matplotlib" in capsys.readouterr().out
    assert not (tmp_path / "out" / "loss.png").exists()


def test_plot_writes_loss_png(corpus, tmp_path):
    pytest.importorskip("matplotlib")
    train_run(corpus, tmp_path / "out", "--max-iters", "2", "--eval-interval", "1", "--plot")
    assert (tmp_path / "out" / "loss.png").stat().st_size > 0


def test_bad_settings_are_clear_errors(corpus, tmp_path):
    with pytest.raises(SystemExit, match="--warmup-iters .* must be between 0 and --lr-decay-iters"):
        train_run(corpus, tmp_path / "out", "--max-iters", "5", "--warmup-iters", "10")
    with pytest.raises(SystemExit, match="fewer than block_size"):
        train_run(corpus, tmp_path / "out", "--block-size", "4096", "--n-embd", "16")


def test_end_to_end_train_then_sample(corpus, tmp_path, device):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY_RUN, "--data", str(corpus), "--out", str(out),
           "--max-iters", "5", "--eval-interval", "5", "--device", device]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "unigram baseline" in done.stdout
    # not a terminal: the progress bar is one summary line, not a redraw per step
    assert [line for line in done.stderr.splitlines() if line.startswith("train:")] == [
        next(line for line in done.stderr.splitlines() if line.startswith("train: 5/5 steps"))]
    assert "\r" not in done.stderr
    sample = subprocess.run([sys.executable, "-m", "gpt", "sample", "--checkpoint", str(out), "--prompt", "the cat",
                             "--max-new-tokens", "10", "--seed", "0", "--device", device],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("the cat") and len(sample.stdout) > len("the cat")


def test_profile_prints_the_table_and_trains_nothing(corpus, tmp_path, capsys, device):
    train_run(corpus, tmp_path / "out", "--profile", "2", "--device", device)
    said = capsys.readouterr().out
    assert "profile of 2 steps" in said and "Linear" in said and "AdamW.step" in said
    assert latest_checkpoint(tmp_path / "out") is None


def test_pretraining_with_a_hugging_face_tokenizer_json_checkpoints_and_resumes(corpus, tmp_path):
    from bpe import Tokenizer

    tok = Tokenizer.train([p.read_text() for p in sorted(corpus.iterdir())], vocab_size=270,
                          special_tokens=["<|endoftext|>"], progress=False)
    tok.save_hf(tmp_path / "tokenizer.json")
    hf = Tokenizer.from_hf(tmp_path / "tokenizer.json")
    out = tmp_path / "out"
    flags = ["--tokenizer", str(tmp_path / "tokenizer.json"), "--checkpoint-interval", "2"]
    train_run(corpus, out, "--max-iters", "2", *flags)
    train_run(corpus, out, "--max-iters", "3", "--resume", *flags)
    saved = Checkpoint.read(latest_checkpoint(out)).tokenizer()
    text = "the cat sat on the mat"
    assert saved.encode(text) == hf.encode(text) and latest_checkpoint(out).name == "step_000003"
