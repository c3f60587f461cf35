"""python -m gpt harness: lm-eval's three questions answered by our scorers, each checked against
log-probabilities computed here from full forwards (no window or batching code), then one
end-to-end run of lm-eval on the local tasks in docs/harness/ (skipped without lm-eval)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import tinytensor as tt
import tinytensor.functional as F
from bpe import Tokenizer
from gpt import GPT, GPTConfig
from gpt.train import cli
from gpt.train.harness import Scorer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_tok() -> tuple[GPT, Tokenizer]:
    tok = Tokenizer(special_tokens=["<|endoftext|>"])        # bytes: 256 ids, then <|endoftext|>
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=24, n_layer=2, n_head=2, n_embd=16))
    return model.to(dtype=np.float64).eval(), tok


def log_probs(model: GPT, ids: list[int]) -> np.ndarray:
    """log p(ids[p] | ids[:p]) for p = 1.., one full forward."""
    with tt.no_grad():
        logp = F.log_softmax(model(np.array([ids[:-1]])), axis=-1).data[0]
    return logp[np.arange(len(ids) - 1), ids[1:]]


def test_loglikelihood_is_the_continuations_log_probability(model_tok):
    model, tok = model_tok
    scorer = Scorer(model, tok, bos=None, batch_size=2)
    pairs = [("The cat", " sat down"), ("A dog ", "ran"), ("", "Hi"), ("x" * 40, " and more")]
    got = scorer.loglikelihood(pairs)
    # by hand: the context's trailing space goes with the continuation; an empty context starts
    # after <|endoftext|>; a row past the block keeps its last block_size + 1 tokens
    eot = tok.special_tokens["<|endoftext|>"]
    for (context, continuation), (ll, _) in zip(pairs, got):
        if context.endswith(" "):
            context, continuation = context[:-1], " " + continuation
        head = list(context.encode()) if context else [eot]
        ids = (head + list(continuation.encode()))[-25:]
        expected = log_probs(model, ids)[-len(continuation.encode()):].sum()
        assert ll == pytest.approx(expected, rel=1e-9)


def test_is_greedy_holds_exactly_when_every_token_is_the_argmax(model_tok):
    model, tok = model_tok
    scorer = Scorer(model, tok, bos=None)
    ids = list(b"Hello")
    greedy = model.generate([ids], 3, temperature=0)[0, len(ids):].tolist()   # three argmax ids
    other = greedy[:2] + [(greedy[2] + 1) % 256]
    (_, first), (_, second) = scorer._score_rows([(ids, greedy), (ids, other)])   # ids, not text: any byte
    assert first and not second


def test_loglikelihood_rolling_scores_every_token_after_the_prefix(model_tok):
    model, tok = model_tok
    scorer = Scorer(model, tok, bos=None)
    short = "Some text."                                           # inside one window: one forward by hand
    ids = [tok.special_tokens["<|endoftext|>"]] + list(short.encode())
    [ll] = scorer.loglikelihood_rolling([short])
    assert ll == pytest.approx(log_probs(model, ids).sum(), rel=1e-9)
    # a text longer than the block: window k feeds tokens [12k, 12k + 24) and scores the
    # predictions no earlier window made, so token p > 24 is predicted in window ceil((p - 24) / 12)
    long = "abcdefghijklmnopqrstuvwxyz" * 3
    ids = [tok.special_tokens["<|endoftext|>"]] + list(long.encode())
    expected = 0.0
    for p in range(1, len(ids)):
        start = 0 if p <= 24 else -(-(p - 24) // 12) * 12
        expected += log_probs(model, ids[start:p + 1])[-1]
    [ll_long] = scorer.loglikelihood_rolling([long])
    assert ll_long == pytest.approx(expected, rel=1e-9)


def test_a_bos_the_tokenizer_adds_comes_first(model_tok):
    model, tok = model_tok
    bos = tok.special_tokens["<|endoftext|>"]
    [(ll, _)] = Scorer(model, tok, bos=bos).loglikelihood([("ab", "c")])
    assert ll == pytest.approx(log_probs(model, [bos, 97, 98, 99])[-1], rel=1e-9)


def test_generate_until_stops_at_the_stop_string_and_the_token_budget(model_tok):
    model, tok = model_tok
    scorer = Scorer(model, tok, bos=None)
    ids = list(b"Once")
    greedy = bytes(model.generate([ids], 12, temperature=0)[0, len(ids):].tolist()).decode("utf-8", "replace")
    stop = greedy[5:7]
    [cut, budget] = scorer.generate_until([("Once", {"until": [stop], "max_gen_toks": 12}),
                                           ("Once", {"until": [], "max_gen_toks": 4})])
    assert cut == greedy[:greedy.index(stop)]
    assert budget == bytes(model.generate([ids], 4, temperature=0)[0, len(ids):].tolist()).decode("utf-8", "replace")


def test_lm_eval_runs_the_local_tasks_as_eval_scores_them(tmp_path, model_tok, capsys, monkeypatch):
    pytest.importorskip("lm_eval")
    from conftest import write_model_folder

    monkeypatch.chdir(ROOT)                                        # the task files name their data from here
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    write_model_folder(tmp_path / "m", model_tok[1])
    cli.main(["harness", "--checkpoint", str(tmp_path / "m"), "--tasks", "choices_local,texts_local",
              "--include-path", "docs/harness", "--output", str(tmp_path / "r.json")])
    assert "choices_local" in capsys.readouterr().out
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    cli.main(["eval", "--checkpoint", str(tmp_path / "m"), "--choices", "docs/harness/choices.jsonl", "--json"])
    ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["choices_local"]["acc,none"] == pytest.approx(ours["acc"])   # acc_norm differs by design:
    # lm-eval divides by the ending's characters, eval by its tokens
    assert results["texts_local"]["bits_per_byte,none"] > 0


def test_without_lm_eval_the_command_names_the_extra(tmp_path, monkeypatch):
    for name in ("lm_eval", "lm_eval.api", "lm_eval.api.model", "lm_eval.api.registry"):
        monkeypatch.setitem(sys.modules, name, None)               # what an import finds when it is absent
    with pytest.raises(SystemExit, match=r"needs lm-eval .*pip install 'tinygpt\[eval\]'"):
        cli.main(["harness", "--checkpoint", str(tmp_path / "nothing"), "--tasks", "x"])
