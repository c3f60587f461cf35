"""python -m gpt eval and the scorers behind it (gpt/evaluate.py, gpt/train/evaluate.py).

The expected numbers come from plain forwards of the model on one prefix at a
time (no window code), from hand-built files whose right answers are known, and
from the definitions (bits per byte of a byte-level tokenizer = nats / ln 2)."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

import tinytensor as tt
import tinytensor.functional as F
from bpe import Tokenizer
from gpt import GPT, GPTConfig
from gpt.evaluate import byte_lengths, choice_nll, score_tokens, sliding_windows, token_nll
from gpt.train import cli
from gpt.train.evaluate import bos_id, encode_documents, read_choices, response_nll
from gpt.train.folders import export_folder
from gpt.train.instruct import PromptTemplate, encode_example
from conftest import TINY_RUN

TEXT = ("The quick brown fox jumps over the lazy dog. A stitch in time saves nine. "
        "Where there is smoke there is fire. ") * 4


def tiny(vocab: int = 300, block: int = 16, **options) -> GPT:
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=2, n_head=2, n_embd=16, **options))
    return model.to(dtype=np.float64).eval()


def exact_nll(model: GPT, ids: np.ndarray, context: int) -> np.ndarray:
    """-log p(ids[p] | the `context` tokens before it, or all of them near the start), one
    full forward per token, from log_softmax of the logits: no window code."""
    out = []
    for p in range(1, len(ids)):
        prefix = ids[max(0, p - context):p]
        with tt.no_grad():
            logp = F.log_softmax(model(prefix[None, :]), axis=-1).data[0, -1]
        out.append(-logp[ids[p]])
    return np.array(out)


@pytest.fixture
def byte_tok() -> Tokenizer:
    return Tokenizer(special_tokens=["<|endoftext|>"])


def test_windows_score_every_token_but_the_first_once():
    for n, N, S in [(2, 4, 1), (10, 4, 1), (10, 4, 2), (10, 4, 4), (11, 4, 3), (5, 8, 4), (100, 16, 5)]:
        scored = []
        for w in sliding_windows(n, N, S):
            assert w.stop - w.start <= N and w.start % S == 0
            scored += [w.start + j + 1 for j in range(w.first, w.stop - w.start)]
            # every scored prediction sees N - S tokens before it, or everything from token 0
            assert all(w.start == 0 or w.first >= N - S for _ in [0])
        assert scored == list(range(1, n))
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(10, 4, 5)


def test_stride_1_equals_token_by_token_nll(byte_tok):
    model = tiny(vocab=257)
    ids = np.array(byte_tok.encode(TEXT[:60]))
    N = 8
    expected = exact_nll(model, ids, N)        # stride 1: every token sees the N - 1 before it (or all)
    score = score_tokens(model, ids, context=N, stride=1, token_bytes=byte_lengths(byte_tok, 257), batch_size=5)
    assert score.tokens == len(ids) - 1
    np.testing.assert_allclose(score.nats, expected.sum(), rtol=1e-10)


def test_stride_equal_to_context_equals_disjoint_chunks(byte_tok):
    model = tiny(vocab=257)
    ids = np.array(byte_tok.encode(TEXT[:45]))
    N = 8
    expected = 0.0                              # chunk k: inputs ids[kN:kN+N] predict ids[kN+1:kN+N+1]
    for a in range(0, len(ids) - 1, N):
        x, y = ids[a:a + N][:len(ids) - 1 - a], ids[a + 1:a + N + 1]
        with tt.no_grad():
            expected += model(x[None], targets=y[None], reduction="sum")[1].item()
    score = score_tokens(model, ids, context=N, stride=N, token_bytes=byte_lengths(byte_tok, 257), batch_size=2)
    np.testing.assert_allclose(score.nats, expected, rtol=1e-10)


def test_token_nll_matches_cross_entropy_at_each_position():
    model = tiny()
    x = np.random.default_rng(0).integers(0, 300, (3, 10))
    y = np.random.default_rng(1).integers(0, 300, (3, 10))
    y[0, :4] = F.IGNORE_INDEX
    with tt.no_grad():
        full = F.cross_entropy(model(x), y, reduction="none").data
    np.testing.assert_allclose(token_nll(model, x, y), full, rtol=1e-10)
    assert (token_nll(model, x, y)[0, :4] == 0).all()


def test_bits_per_byte_of_a_byte_tokenizer_is_nats_per_token_over_ln2(byte_tok):
    model = tiny(vocab=257)
    ids = byte_tok.encode("plain ASCII text, one byte per token")
    score = score_tokens(model, ids, 16, 8, byte_lengths(byte_tok, 257))
    assert score.bytes == len(ids) - 1
    assert score.bits_per_byte == pytest.approx(score.nats_per_token / math.log(2), rel=1e-12)


def test_byte_lengths_count_special_tokens_as_zero(byte_tok):
    lengths = byte_lengths(byte_tok, 260)
    assert lengths[:256].tolist() == [1] * 256
    assert lengths[byte_tok.special_tokens["<|endoftext|>"]] == 0 and lengths[257:].tolist() == [0, 0, 0]


def test_choice_nll_scores_only_the_ending_tokens():
    model = tiny()
    ctx, endings = [5, 6, 7, 8], [[9, 10], [11, 12, 13]]
    scores = choice_nll(model, ctx, endings)
    for (nats, n), ending in zip(scores, endings):
        row = np.array(ctx + ending)
        with tt.no_grad():
            logp = F.log_softmax(model(row[None, :-1]), axis=-1).data[0]
        expected = -sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(ending))
        assert n == len(ending)
        assert nats == pytest.approx(expected, rel=1e-10)


# ---- models in folders, and the command ------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    """A byte-level GPT that has learned TEXT by heart (a few hundred steps), saved as
    one of our checkpoints, with a Hugging Face tokenizer for export."""
    from tinytensor import optim

    tok = Tokenizer.train([TEXT], 300, special_tokens=["<|endoftext|>"], progress=False)
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32))
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    ids = np.array(tok.encode(TEXT))
    rng = np.random.default_rng(0)
    for _ in range(120):
        starts = rng.integers(0, len(ids) - 33, 8)
        x = np.stack([ids[s:s + 32] for s in starts])
        y = np.stack([ids[s + 1:s + 33] for s in starts])
        loss = model(x, targets=y)[1]
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval(), tok


def write_ours(model: GPT, tok: Tokenizer, folder) -> None:
    """One of our model folders (config.json, model.safetensors, tokenizer.json)."""
    folder.mkdir(parents=True)
    tt.save(model.state_dict(), folder / "model.safetensors")
    tok.save(folder / "tokenizer.json")
    (folder / "config.json").write_text(json.dumps({"model": model.config.to_dict()}))


def run_eval(argv, capsys) -> dict:
    cli.main(["eval", *argv, "--json"])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_perplexity_on_our_checkpoint(tmp_path, trained, capsys):
    model, tok = trained
    write_ours(model, tok, tmp_path / "run")
    (tmp_path / "text.txt").write_text(TEXT)
    result = run_eval(["--checkpoint", str(tmp_path / "run"), "--data", str(tmp_path / "text.txt")], capsys)
    ids = tok.encode(TEXT)
    assert set(result) == {"tokens", "nats_per_token", "perplexity", "bits_per_byte", "bytes"}
    assert result["tokens"] == len(ids) - 1 and result["bytes"] == len(TEXT.encode()) - len(tok.decode_bytes(ids[:1]))
    expected = score_tokens(model, ids, 32, 16, byte_lengths(tok, 300))
    assert result["nats_per_token"] == pytest.approx(expected.nats_per_token, rel=1e-5)
    assert result["perplexity"] < 3.0                       # it learned the text (uniform: 300)
    disjoint = run_eval(["--checkpoint", str(tmp_path / "run"), "--data", str(tmp_path / "text.txt"),
                         "--stride", "32"], capsys)
    assert disjoint["nats_per_token"] > result["nats_per_token"]   # less context per token on average


@pytest.mark.parametrize("kind,options", [
    ("gpt2", {}),
    ("llama", dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False, n_kv_head=1, tie_embeddings=False)),
    ("qwen3", dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False, qk_norm=True, head_dim=16)),
])
def test_cli_on_hugging_face_folders(tmp_path, trained, kind, options, capsys):
    _, tok = trained
    tt.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=300, block_size=32, n_layer=1, n_head=2, n_embd=16, **options))
    assert export_folder(model, tok, tmp_path / kind) == kind
    (tmp_path / "text.txt").write_text(TEXT)
    result = run_eval(["--checkpoint", str(tmp_path / kind), "--data", str(tmp_path / "text.txt")], capsys)
    expected = score_tokens(model.eval(), tok.encode(TEXT), 32, 16, byte_lengths(tok, 300))
    assert result["nats_per_token"] == pytest.approx(expected.nats_per_token, rel=1e-4)
    choices = tmp_path / "choices.jsonl"
    choices.write_text(json.dumps({"ctx": "The quick brown", "endings": ["fox", "dog"], "label": 0}) + "\n")
    assert set(run_eval(["--checkpoint", str(tmp_path / kind), "--choices", str(choices)], capsys)) \
        == {"n", "acc", "acc_norm"}


@pytest.mark.slow                  # GPT-2's 50257-token vocabulary files
def test_gpt2_folder_with_vocab_and_merges(tmp_path, shared_data, capsys):
    tt.manual_seed(0)
    GPT(GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=8)).save_pretrained(tmp_path / "hf")
    shutil.copy(shared_data / "gpt2" / "encoder.json", tmp_path / "hf" / "vocab.json")
    shutil.copy(shared_data / "gpt2" / "vocab.bpe", tmp_path / "hf" / "merges.txt")
    (tmp_path / "text.txt").write_text(TEXT)
    result = run_eval(["--checkpoint", str(tmp_path / "hf"), "--data", str(tmp_path / "text.txt")], capsys)
    assert result["perplexity"] == pytest.approx(50257, rel=0.05)      # random weights: close to uniform
    assert result["bytes"] == len(TEXT.encode()) - 3                      # "The" is GPT-2's first token


def test_bos_from_the_tokenizer_config_is_put_first(tmp_path, trained):
    _, tok = trained
    llama = GPT(GPTConfig(vocab_size=300, block_size=32, n_layer=1, n_head=2, n_embd=16, pos="rope", mlp="swiglu",
                          norm="rmsnorm", bias=False))
    export_folder(llama, tok, tmp_path / "llama")
    assert bos_id(tmp_path / "llama", tok) is None
    (tmp_path / "llama" / "tokenizer_config.json").write_text(
        json.dumps({"add_bos_token": True, "bos_token": "<|endoftext|>"}))
    eot = tok.special_tokens["<|endoftext|>"]
    assert bos_id(tmp_path / "llama", tok) == eot
    assert encode_documents(tok, ["ab", "cd"], eot) == [eot] + tok.encode("ab") + [eot] + tok.encode("cd")


def test_multiple_choice_picks_the_ending_that_continues_the_text(tmp_path, trained, capsys):
    model, tok = trained
    write_ours(model, tok, tmp_path / "run")
    lines = []
    for label, (ctx, right) in enumerate([("The quick brown fox jumps over the", "lazy dog."),
                                          ("A stitch in time", "saves nine."),
                                          ("Where there is smoke there", "is fire.")]):
        wrong = ["time fire smoke.", "nine lazy brown.", "over quick dog."]
        endings = wrong[:label % 3] + [right] + wrong[label % 3:]
        lines.append({"ctx": ctx, "endings": endings, "label": label % 3})
    lines.append({"ctx_a": "A stitch", "ctx_b": "in time", "activity_label": "Sewing",
                  "endings": ["smoke there.", "saves nine."], "label": "1"})
    path = tmp_path / "choices.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert read_choices(path)[3][0] == "A stitch in time"
    result = run_eval(["--checkpoint", str(tmp_path / "run"), "--choices", str(path)], capsys)
    assert result == {"n": 4, "acc": 1.0, "acc_norm": 1.0}
    assert run_eval(["--checkpoint", str(tmp_path / "run"), "--choices", str(path), "--limit", "2"], capsys)["n"] == 2


def test_choices_file_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"ctx": "a", "endings": ["b", "c"], "label": 0}) + "\n"
                    + json.dumps({"ctx": "a", "endings": ["b", "c"], "label": 2}) + "\n")
    with pytest.raises(ValueError, match="line 2: 'label'"):
        read_choices(path)
    path.write_text(json.dumps({"ctx": "a", "endings": ["b", "c"], "label": 0}) + "\n\n{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 3: not valid JSON"):
        read_choices(path)


def test_instruct_nll_masks_exactly_the_prompt(trained):
    model, tok = trained
    entries = [{"instruction": "Say the proverb.", "input": "", "output": "A stitch in time saves nine."},
               {"instruction": "Finish it.", "input": "The quick brown", "output": "fox jumps."}]
    template = PromptTemplate("Q: {instruction} {input} A: ", "Q: {instruction} A: ")   # fits the block
    nats, count = response_nll(model, tok, template, entries, batch_size=2)
    expected, tokens = 0.0, 0
    for e in entries:
        seq, prompt_len = encode_example(tok, template, e)
        # scored: every response token and the final <|endoftext|>, each given all before it
        with tt.no_grad():
            logp = F.log_softmax(model(np.array(seq[:-1])[None]), axis=-1).data[0]
        expected -= sum(logp[p - 1, seq[p]] for p in range(prompt_len, len(seq)))
        tokens += len(seq) - prompt_len
    assert count == tokens
    assert nats == pytest.approx(expected, rel=1e-5)


def test_cli_instruct_scores_answers_against_references(tmp_path, trained, capsys):
    pytest.importorskip("rouge_score")
    model, tok = trained
    write_ours(model, tok, tmp_path / "run")
    data = tmp_path / "instructions.json"
    data.write_text(json.dumps([{"instruction": "Say it.", "input": "", "output": "A stitch in time saves nine."}] * 2))
    template = tmp_path / "template.json"
    template.write_text(json.dumps({"with_input": "Q: {instruction} {input} A: ", "without_input": "Q: {instruction} A: "}))
    result = run_eval(["--checkpoint", str(tmp_path / "run"), "--instruct", str(data), "--max-new-tokens", "8",
                       "--prompt-template", str(template)], capsys)
    assert result["n"] == 2 and 0.0 <= result["rougeL_f1"] <= 1.0 and result["exact_match"] in (0.0, 1.0)
    assert result["nll"] > 0
    assert "rougeL_f1" not in run_eval(["--checkpoint", str(tmp_path / "run"), "--instruct", str(data),
                                        "--max-new-tokens", "0", "--prompt-template", str(template)], capsys)
    with pytest.raises(SystemExit, match="no reference output fits"):     # Alpaca's prompt fills 32 tokens
        cli.main(["eval", "--checkpoint", str(tmp_path / "run"), "--instruct", str(data)])


def test_cli_val_split_of_a_training_run(tmp_path, corpus, capsys):
    import train

    train.main(["--data", str(corpus), "--out", str(tmp_path / "out"), *TINY_RUN, "--max-iters", "2",
                "--eval-interval", "1", "--full-val"])
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    assert all("val_bpb" in r for r in evals)
    # byte-level: bits per byte = nats per token / ln 2, on windows that hold no <|endoftext|>
    assert evals[-1]["val_bpb"] >= evals[-1]["val_loss"] / math.log(2) - 1e-9
    capsys.readouterr()
    result = run_eval(["--checkpoint", str(tmp_path / "out"), "--val", "--stride", "16"], capsys)
    assert result["nats_per_token"] == pytest.approx(evals[-1]["val_full_loss"], rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(evals[-1]["val_full_bpb"], rel=1e-5)


def test_cli_errors(tmp_path, trained):
    model, tok = trained
    write_ours(model, tok, tmp_path / "run")
    (tmp_path / "t.txt").write_text(TEXT)
    with pytest.raises(SystemExit, match="--stride must be at least 1"):
        cli.main(["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(tmp_path / "t.txt"), "--stride", "0"])
    with pytest.raises(SystemExit, match="stride <= context"):
        cli.main(["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(tmp_path / "t.txt"), "--context",
                  "8", "--stride", "9"])
    with pytest.raises(SystemExit, match="--val needs a pretraining run"):
        cli.main(["eval", "--checkpoint", str(tmp_path / "run"), "--val"])
