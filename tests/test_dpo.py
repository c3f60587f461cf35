"""Preference tuning (DPO): the loss op's gradient, the reference, the masks, bad input, a run."""
from __future__ import annotations

import io
import json
import math
import shutil

import numpy as np
import pytest
from conftest import as_numpy, seeds, write_model_folder
from hypothesis import given
from hypothesis import strategies as st

import tinytensor as tt
import train
from bpe import Tokenizer
from gpt import GPT, GPTConfig
from gpt.lora import adapters_off, apply_lora
from gpt.train.cli import main as gpt_main
from gpt.train.settings import DPOConfig
from gpt.train.dpo import (Preferences, Reference, collate_pairs, encode_pair, finetune_dpo, frozen_copy,
                           read_preferences, response_log_probs)
from gpt.train.finetune import split_dataset
from gpt.train.folders import folder_kind
from gpt.train.instruct import ALPACA, SPLIT
from tinytensor import functional as F
from tinytensor import reference as R
from tinytensor.functional import IGNORE_INDEX

WORDS = "red blue green cat dog sun moon star tree sky rain snow".split()
ENTRIES = [{"instruction": f"Name the word {w}.", "input": "" if i % 3 else "please", "output": w,
            "chosen": f"Of course! The word is {w}.", "rejected": f"Ugh, fine: {w}."} for i, w in enumerate(WORDS)]


def tokenizer() -> Tokenizer:
    texts = [ALPACA.format(e["instruction"], e["input"]) + e["chosen"] + e["rejected"] for e in ENTRIES]
    return Tokenizer.train(texts, vocab_size=320, special_tokens=["<|endoftext|>"], progress=False)


def tiny_gpt(tok: Tokenizer, block_size: int = 96) -> GPT:
    tt.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16))


# ---- the op ------------------------------------------------------------------------------
@given(b=st.integers(1, 6), beta=st.floats(0.01, 3.0), spread=st.sampled_from([0.1, 3.0, 20.0]),
       reduction=st.sampled_from(["mean", "sum", "none"]), seed=seeds)
def test_dpo_loss_gradcheck(b, beta, spread, reduction, seed, device):
    rng = np.random.default_rng(seed)
    chosen, rejected = (tt.tensor(rng.standard_normal(b) * spread, requires_grad=True, dtype="float64", device=device)
                        for _ in range(2))
    ref_c, ref_r = rng.standard_normal(b) * spread, rng.standard_normal(b) * spread

    def loss(c, r):
        out = F.dpo_loss(c, r, ref_c, ref_r, beta, reduction)
        return out if reduction != "none" else (out * tt.tensor(np.arange(1.0, b + 1), device=device)).sum()

    assert tt.gradcheck(loss, [chosen, rejected])


@given(b=st.integers(1, 3), t=st.integers(1, 5), v=st.integers(1, 6), seed=seeds)
def test_the_whole_chain_into_the_logits_gradcheck(b, t, v, seed):
    # logits (B, 2, T, V) -> summed masked log-probabilities (B, 2) -> the DPO loss, as the task computes it
    rng = np.random.default_rng(seed)
    logits = tt.tensor(rng.uniform(-3, 3, (b, 2, t, v)), requires_grad=True, dtype="float64")
    targets = rng.integers(0, v, (b, 2, t))
    targets[rng.random((b, 2, t)) < 0.4] = IGNORE_INDEX       # prompt and padding
    ref = rng.standard_normal((b, 2)) * 3

    def loss(x):
        lp = -F.cross_entropy(x, targets, reduction="none").sum(axis=-1)   # (B, 2)
        return F.dpo_loss(lp[:, 0], lp[:, 1], ref[:, 0], ref[:, 1], beta=0.5)

    assert tt.gradcheck(loss, [logits])


def test_dpo_loss_against_its_formula_and_the_composed_reference():
    rng = np.random.default_rng(1)
    c, r, rc, rr = (rng.standard_normal(5) * 4 for _ in range(4))
    z = 0.3 * ((c - rc) - (r - rr))
    expected = np.log1p(np.exp(-z))                            # -log sigmoid(z)
    sig_minus = 1 / (1 + np.exp(z))
    for reduction, value, grad in (("mean", expected.mean(), -0.3 * sig_minus / 5),
                                   ("sum", expected.sum(), -0.3 * sig_minus)):
        tc, tr = tt.tensor(c, requires_grad=True, dtype="float64"), tt.tensor(r, requires_grad=True, dtype="float64")
        out = F.dpo_loss(tc, tr, rc, rr, 0.3, reduction)
        assert np.isclose(out.item(), value)
        out.backward()
        assert np.allclose(tc.grad, grad) and np.allclose(tr.grad, -grad)
        composed = [tt.tensor(v, requires_grad=True, dtype="float64") for v in (c, r)]
        ref_out = R.dpo_loss(*composed, rc, rr, 0.3, reduction)
        ref_out.backward()
        assert np.isclose(ref_out.item(), value) and np.allclose(composed[0].grad, grad)


def test_dpo_loss_is_finite_far_from_zero_and_checks_shapes():
    c = tt.tensor([1e4, -1e4, 0.0], requires_grad=True)       # float32: e^(1e4) would overflow
    out = F.dpo_loss(c, tt.tensor([0.0, 0.0, 0.0]), [0.0] * 3, [0.0] * 3, beta=1.0, reduction="none")
    assert np.allclose(out.numpy(), [0.0, 1e4, math.log(2)])
    out.sum().backward()
    assert np.allclose(c.grad, [0.0, -1.0, -0.5]) and c.grad.dtype == np.float32
    with pytest.raises(ValueError, match="one shape"):
        F.dpo_loss(tt.tensor([0.0, 1.0]), tt.tensor([0.0]), [0.0, 0.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="reduction"):
        F.dpo_loss(tt.tensor([0.0]), tt.tensor([0.0]), [0.0], [0.0], reduction="max")


# ---- data and masks -------------------------------------------------------------------------
def test_masks_cover_exactly_the_response_tokens():
    tok = tokenizer()
    eos = tok.special_tokens["<|endoftext|>"]
    pairs = [encode_pair(tok, ALPACA, e) for e in ENTRIES[:3]]
    inputs, targets = collate_pairs(pairs, pad=eos)
    longest = max(len(s) for c, r, _ in pairs for s in (c, r))
    assert inputs.shape == targets.shape == (3, 2, longest - 1)   # chosen and rejected padded together
    for b, entry in enumerate(ENTRIES[:3]):
        prompt = tok.encode(ALPACA.format(entry["instruction"], entry["input"]))
        for i, key in enumerate(("chosen", "rejected")):
            kept = targets[b, i] != IGNORE_INDEX
            response = tok.encode(entry[key]) + [eos]
            # the targets kept are the response's ids and its end-of-text, in order, and nothing else
            assert targets[b, i][kept].tolist() == response
            assert np.flatnonzero(kept).tolist() == list(range(len(prompt) - 1, len(prompt) - 1 + len(response)))
            assert inputs[b, i, :len(prompt)].tolist() == prompt


def test_bad_preference_files_get_one_clear_line(tmp_path):
    cases = {"no_chosen": [{"instruction": "a", "rejected": "b"}],
             "empty": [{"instruction": "a", "chosen": "c", "rejected": "  "}],
             "not_a_list": {"instruction": "a"}, "none": []}
    messages = {"no_chosen": "entry 1 needs a string field 'chosen'",
                "empty": "entry 1: the 'rejected' response is empty",
                "not_a_list": "expected a JSON list", "none": "no preference pairs"}
    for name, content in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
        with pytest.raises(ValueError, match=messages[name]):
            read_preferences(tmp_path / f"{name}.json")
    (tmp_path / "d.jsonl").write_text(json.dumps(ENTRIES[0]) + "\n\n" + "{oops\n")
    with pytest.raises(ValueError, match="line 3: not valid JSON"):
        read_preferences(tmp_path / "d.jsonl")
    with pytest.raises(FileNotFoundError):
        read_preferences(tmp_path / "missing.json")


def test_a_prompt_longer_than_the_context_is_left_out_or_an_error(tmp_path):
    tok = tokenizer()
    prompt_lens = [encode_pair(tok, ALPACA, e)[2] for e in ENTRIES]
    write_model_folder(tmp_path / "base", tok, block_size=min(prompt_lens))   # the shortest prompts fit, exactly
    data = tmp_path / "d.json"
    data.write_text(json.dumps(ENTRIES * 2))
    lines = []
    cfg = DPOConfig(init_from=str(tmp_path / "base"), data=str(data), out=str(tmp_path / "out"), eval_interval=0,
                    n_responses=0)
    finetune_dpo(cfg, say=lines.append)
    unfit = 2 * sum(n > min(prompt_lens) for n in prompt_lens)
    assert f"warning: {unfit} of {2 * len(ENTRIES)} pairs have a prompt longer than" in "\n".join(lines)
    write_model_folder(tmp_path / "small", tok, block_size=8)
    cfg = DPOConfig(init_from=str(tmp_path / "small"), data=str(data), out=str(tmp_path / "out2"))
    with pytest.raises(ValueError, match="no training pair has a response token"):
        finetune_dpo(cfg, say=lambda s: None)


# ---- the reference and the loss at the start ------------------------------------------------
def test_reference_with_adapters_off_equals_a_frozen_copy_exactly(tmp_path):
    tok = tokenizer()
    write_model_folder(tmp_path / "base", tok, n_layer=2, block_size=96)
    frozen = frozen_copy(tmp_path / "base", "cpu")
    policy = frozen_copy(tmp_path / "base", "cpu").train()
    apply_lora(policy, rank=2, alpha=4.0)
    for p in policy.parameters():
        if p.requires_grad:                          # adapters that changed the model (B is 0 at the start)
            p.data[...] = np.random.default_rng(0).standard_normal(p.shape)
    inputs, targets = collate_pairs([encode_pair(tok, ALPACA, e) for e in ENTRIES[:4]], pad=0)
    with tt.no_grad():
        tuned = response_log_probs(policy, inputs, targets).numpy()
        expected = response_log_probs(frozen, inputs, targets).numpy()
    assert not np.allclose(tuned, expected)
    np.testing.assert_array_equal(as_numpy(Reference(policy, None)(inputs, targets)), expected)
    np.testing.assert_array_equal(as_numpy(Reference(policy, frozen)(inputs, targets)), expected)
    with tt.no_grad():
        np.testing.assert_array_equal(response_log_probs(policy, inputs, targets).numpy(), tuned)  # adapters back on
    assert policy.training                           # the reference pass left the policy's mode alone
    with pytest.raises(ValueError, match="no LoRA adapters"):
        with adapters_off(frozen):
            pass


@pytest.mark.parametrize("lora", [False, True])
def test_loss_is_log_2_at_step_0_and_every_reward_is_0(tmp_path, lora):
    tok = tokenizer()
    write_model_folder(tmp_path / "base", tok, n_layer=2, block_size=96)
    policy = frozen_copy(tmp_path / "base", "cpu").train()
    if lora:
        apply_lora(policy, rank=2, alpha=4.0)
    else:
        for p in policy.parameters():
            p.requires_grad = True
    pairs = [encode_pair(tok, ALPACA, e) for e in ENTRIES]
    splits = split_dataset(len(pairs), 0, SPLIT)
    reference = Reference(policy, None if lora else frozen_copy(tmp_path / "base", "cpu"))
    task = Preferences(pairs, splits, 0, 96, reference, 0.1, 4, 1, 0, None)
    batch = task.next_batch()
    loss = task.loss(policy, batch.rows(0, 1))
    assert abs(loss.item() / batch.n_targets - math.log(2)) < 1e-6
    loss.backward()                                  # the gradient is not 0: -beta/2 per pair into each log-prob
    assert any(p.grad is not None and np.abs(p.grad).max() > 0 for p in policy.parameters() if p.requires_grad)
    from gpt.train.distributed import SingleProcess
    row = task.evaluate(policy.eval(), SingleProcess(), final=True)
    assert abs(row["val_loss"] - math.log(2)) < 1e-6
    assert row["val_reward_accuracy"] == 0 and row["val_reward_margin"] == 0 and row["train_chosen_reward"] == 0


def test_cached_reference_gives_the_same_losses(tmp_path):
    tok = tokenizer()
    write_model_folder(tmp_path / "base", tok, n_layer=1, block_size=96)
    policy = frozen_copy(tmp_path / "base", "cpu")
    apply_lora(policy, rank=2, alpha=4.0)
    for p in policy.parameters():
        if p.requires_grad:
            p.data[...] = np.random.default_rng(1).standard_normal(p.shape) * 0.1
    pairs = [encode_pair(tok, ALPACA, e) for e in ENTRIES]
    splits = split_dataset(len(pairs), 0, SPLIT)
    from gpt.train.distributed import SingleProcess
    per_batch = Preferences(pairs, splits, 0, 96, Reference(policy, None), 0.1, 4, 1, 0, None)
    cached = Preferences(pairs, splits, 0, 96, Reference(policy, None), 0.1, 4, 1, 0, None)
    cached.cache_reference(SingleProcess())
    assert cached.reference is None and cached.cached.shape == (len(pairs), 2)
    a = per_batch.evaluate(policy, SingleProcess(), final=True)
    b = cached.evaluate(policy, SingleProcess(), final=True)
    assert a.keys() == b.keys() and all(np.isclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
    assert a["train_reward_margin"] != 0


# ---- a run ---------------------------------------------------------------------------------
def test_train_py_task_dpo_tunes_logs_and_chats(tmp_path, monkeypatch, capsys, device):
    tok = tokenizer()
    write_model_folder(tmp_path / "base", tok, n_layer=1, n_embd=16, block_size=96)
    data = tmp_path / "pref.json"
    data.write_text(json.dumps(ENTRIES * 3))
    train.main(["--task", "dpo", "--init-from", str(tmp_path / "base"), "--data", str(data), "--out",
                str(tmp_path / "dpo"), "--epochs", "3", "--lr", "1e-2", "--batch-size", "8", "--eval-interval", "3",
                "--lora-rank", "2", "--cache-reference", "--n-responses", "2", "--max-new-tokens", "4",
                "--device", device])
    printed = capsys.readouterr().out
    assert "val before tuning: loss 0.6931, reward accuracy 0.000, margin 0.0000" in printed
    final = json.loads((tmp_path / "dpo" / "metrics.json").read_text())["final"]
    assert final["val_reward_margin"] > final["val_reward_margin_before"] == 0
    assert final["train_loss"] < math.log(2)
    rows = [json.loads(line) for line in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    assert len(evals) >= 3 and {"val_reward_accuracy", "val_reward_margin", "val_chosen_reward",
                                "val_rejected_reward", "train_reward_accuracy"} <= evals[0].keys()
    config = json.loads((tmp_path / "dpo" / "config.json").read_text())
    assert config["task"] == "dpo" and config["finetune"]["beta"] == 0.1 and config["lora"]["rank"] == 2
    responses = [json.loads(line) for line in (tmp_path / "dpo" / "responses.jsonl").read_text().splitlines()]
    assert len(responses) == 2 and all({"response_before", "model_response"} <= r.keys() for r in responses)

    monkeypatch.setattr("sys.stdin", io.StringIO("Name the word red.\n"))
    gpt_main(["chat", "--checkpoint", str(tmp_path / "dpo"), "--max-new-tokens", "4", "--device", device])
    assert len(capsys.readouterr().out.strip().split("\n")) == 1


def test_train_py_task_dpo_bad_input_is_one_line(tmp_path, capsys):
    tok = tokenizer()
    write_model_folder(tmp_path / "base", tok)
    data = tmp_path / "pref.json"
    data.write_text(json.dumps([{"instruction": "a", "input": "", "rejected": "no"}]))
    with pytest.raises(SystemExit) as exit:
        train.main(["--task", "dpo", "--init-from", str(tmp_path / "base"), "--data", str(data),
                    "--out", str(tmp_path / "out")])
    message = str(exit.value.code)
    assert message.count("\n") == 0 and "entry 1 needs a string field 'chosen'" in message
    with pytest.raises(SystemExit) as exit:
        train.main(["--task", "dpo", "--init-from", str(tmp_path / "base"), "--data", str(data), "--beta", "0"])
    assert "--beta" in str(exit.value.code) + capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="no mpiexec (pip install -e '.[mpi]')")
def test_two_ranks_tune_as_one_process_does(tmp_path):
    from test_distributed import launch

    tok = tokenizer()
    write_model_folder(tmp_path / "base", tok, n_layer=1, block_size=96)
    data = tmp_path / "pref.json"
    data.write_text(json.dumps(ENTRIES * 2))
    args = ["--task", "dpo", "--init-from", str(tmp_path / "base"), "--data", str(data), "--epochs", "2",
            "--batch-size", "4", "--eval-interval", "0", "--lr", "1e-2", "--n-responses", "0"]
    one = launch(1, args + ["--out", str(tmp_path / "one")], tmp_path)
    # cached: each rank scores its share of the pairs
    two = launch(2, args + ["--out", str(tmp_path / "two"), "--cache-reference"], tmp_path)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("val reward accuracy") == 2      # the final evaluation and the summary, rank 0 alone
    final = [json.loads((tmp_path / o / "metrics.json").read_text())["final"] for o in ("one", "two")]
    assert final[1]["train_loss"] == pytest.approx(final[0]["train_loss"], rel=1e-4)
    assert final[1]["val_reward_margin"] == pytest.approx(final[0]["val_reward_margin"], rel=1e-3)


def test_plot_draws_the_loss_and_the_rewards(tmp_path):
    pytest.importorskip("matplotlib")
    from gpt.train.dpo import plot_dpo

    evals = [{"step": s, "train_loss": 0.7 - s / 100, "val_loss": 0.7 - s / 200, "val_reward_accuracy": s / 10,
              "val_reward_margin": s / 5, "val_chosen_reward": s / 10, "val_rejected_reward": -s / 10}
             for s in (0, 5)]
    plot_dpo([{"step": s, "loss": 0.7} for s in range(1, 6)] + evals, tmp_path / "dpo.png")
    assert (tmp_path / "dpo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_dpo_folder_is_a_fine_tuned_model_to_the_folder_checks(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"task": "dpo"}))
    assert folder_kind(tmp_path) == "a fine-tuned model"
