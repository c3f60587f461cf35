"""Instruction fine-tuning: prompts, masking in collation, overfitting, the run and the chat CLI."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from conftest import write_model_folder

import train

import tinytensor as tt
from bpe import Tokenizer
from gpt import GPT, GPTConfig
from gpt.train.cli import main
from gpt.train.settings import InstructConfig
from gpt.train.finetune import finetune_instruct
from gpt.train.folders import load_finetuned
from gpt.train.instruct import ALPACA, PromptTemplate, collate, encode_example, read_instructions
from tinytensor.functional import IGNORE_INDEX
from tinytensor import optim

ENTRIES = [
    {"instruction": "Say hi.", "input": "", "output": "Hi!"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name a color.", "input": "", "output": "Blue."},
    {"instruction": "Reverse the word.", "input": "cat", "output": "tac"},
    {"instruction": "Give the opposite.", "input": "hot", "output": "cold"},
    {"instruction": "Capitalize.", "input": "paris", "output": "Paris"},
    {"instruction": "Count to three.", "input": "", "output": "1, 2, 3"},
    {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
]
X = IGNORE_INDEX


def tokenizer() -> Tokenizer:
    texts = [ALPACA.format(e["instruction"], e["input"]) + e["output"] for e in ENTRIES]
    return Tokenizer.train(texts, vocab_size=360, special_tokens=["<|endoftext|>"], progress=False)


def write_base(folder, tok, n_layer=1, n_embd=32, block_size=96) -> GPT:
    return write_model_folder(folder, tok, n_layer, n_embd, block_size)


# ---- prompts and data ---------------------------------------------------------------
def test_alpaca_template():
    with_input = ALPACA.format("Add.", "2 and 3")
    assert with_input.startswith("Below is an instruction that describes a task.")
    assert with_input.endswith("### Instruction:\nAdd.\n\n### Input:\n2 and 3\n\n### Response:\n")
    assert ALPACA.format("Say hi.").endswith("### Instruction:\nSay hi.\n\n### Response:\n")
    custom = PromptTemplate("Q: {instruction} ({input})\nA: ", "Q: {instruction}\nA: ")
    assert custom.format("x", "y") == "Q: x (y)\nA: " and custom.format("x") == "Q: x\nA: "
    with pytest.raises(ValueError, match="placeholder"):
        PromptTemplate("no placeholders", "{instruction}")


def test_read_json_and_jsonl(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([{"instruction": "a", "output": "b"}]))
    assert read_instructions(tmp_path / "d.json") == [{"instruction": "a", "input": "", "output": "b"}]
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "input": "i", "output": "b"}\n\n')
    assert read_instructions(tmp_path / "d.jsonl") == [{"instruction": "a", "input": "i", "output": "b"}]
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="no examples"):
        read_instructions(tmp_path / "empty.json")
    (tmp_path / "bad.json").write_text(json.dumps([{"instruction": "a"}]))
    with pytest.raises(ValueError, match="entry 1 needs"):
        read_instructions(tmp_path / "bad.json")


def test_encode_example_appends_end_of_text():
    tok = tokenizer()
    ids, prompt_len = encode_example(tok, ALPACA, ENTRIES[1])
    eos = tok.special_tokens["<|endoftext|>"]
    assert ids[-1] == eos and eos not in ids[:-1]
    assert tok.decode(ids[:prompt_len]) == ALPACA.format("Add the numbers.", "2 and 3")
    assert tok.decode(ids[prompt_len:-1]) == "5"


# ---- masking -------------------------------------------------------------------------
# two sequences: prompt | response | <eot>, with <eot> = 9 and padding with 9 too (GPT-2's choice)
SEQS = [([1, 2, 3, 4, 5, 9], 3),    # prompt 1 2 3, response 4 5
        ([6, 7, 8, 9], 2)]          # prompt 6 7, response 8


def test_collate_without_prompt_mask():
    inputs, targets, truncated = collate(SEQS, pad_id=9)
    assert inputs.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 9]]
    # shifted by one; the first end-of-text is a target, the padding after it is ignored
    assert targets.tolist() == [[2, 3, 4, 5, 9], [7, 8, 9, X, X]]
    assert truncated == 0


def test_collate_with_prompt_mask():
    _, targets, _ = collate(SEQS, pad_id=9, mask_prompt=True)
    # targets that are prompt tokens (2, 3 and 7) are ignored; the response and its end-of-text stay
    assert targets.tolist() == [[X, X, 4, 5, 9], [X, 8, 9, X, X]]


def test_collate_keeps_an_end_of_text_inside_the_text_and_truncates():
    inputs, targets, truncated = collate([([1, 9, 2, 9], 1), ([3, 4, 9], 2)], pad_id=0, max_length=2)
    assert inputs.tolist() == [[1, 9], [3, 4]] and targets.tolist() == [[9, 2], [4, 9]]
    assert truncated == 1


def test_custom_ignore_index():
    _, targets, _ = collate(SEQS, pad_id=9, ignore_index=-1)
    assert targets[1].tolist() == [7, 8, 9, -1, -1]


# ---- training --------------------------------------------------------------------------
def test_overfits_8_examples():
    # cpu only: 150 steps take seconds; the cuda pass trains on instructions in the run below
    tok = tokenizer()
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=96, n_layer=2, n_head=2, n_embd=32))
    inputs, targets, _ = collate([encode_example(tok, ALPACA, e) for e in ENTRIES], tok.special_tokens["<|endoftext|>"])
    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(150):
        _, loss = model(inputs, targets=targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_finetune_run_writes_responses_and_chat_answers(tmp_path, monkeypatch, capsys, device):
    tok = tokenizer()
    write_base(tmp_path / "base", tok)
    data = tmp_path / "d.json"
    data.write_text(json.dumps(ENTRIES * 3))
    cfg = InstructConfig(init_from=str(tmp_path / "base"), data=str(data), out=str(tmp_path / "inst"), epochs=10,
                         lr=1e-2, batch_size=8, eval_interval=5, mask_prompt=True, max_new_tokens=8, device=device)
    final = finetune_instruct(cfg, say=lambda s: None)
    assert final["val_loss"] < final["val_loss_before"]
    responses = [json.loads(line) for line in (tmp_path / "inst" / "responses.jsonl").read_text().splitlines()]
    assert len(responses) == 3 and all("model_response" in r for r in responses)   # 24 - 20 train - 1 val
    config = json.loads((tmp_path / "inst" / "config.json").read_text())
    assert config["task"] == "instruct" and config["prompt_template"] == ALPACA.to_dict()
    assert "val_loss" in json.loads((tmp_path / "inst" / "metrics.json").read_text())["final"]

    monkeypatch.setattr("sys.stdin", io.StringIO("Say hi.\n\nName a color.\n"))
    main(["chat", "--checkpoint", str(tmp_path / "inst"), "--max-new-tokens", "8", "--device", device])
    assert len(capsys.readouterr().out.strip().split("\n")) == 2   # one answer per instruction, blank line skipped


def test_lora_instruct_checkpoint_is_small_and_reloads(tmp_path, device):
    tok = tokenizer()
    write_base(tmp_path / "base", tok, n_layer=2)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in ENTRIES * 2))
    cfg = InstructConfig(init_from=str(tmp_path / "base"), data=str(data), out=str(tmp_path / "lora"), epochs=2,
                         lr=1e-2, lora_rank=2, eval_interval=0, n_responses=1, max_new_tokens=4, device=device)
    finetune_instruct(cfg, say=lambda s: None)
    adapters = (tmp_path / "lora" / "lora.safetensors").stat().st_size
    assert adapters < (tmp_path / "base" / "model.safetensors").stat().st_size / 4
    model, _, config = load_finetuned(tmp_path / "lora", device=device)
    assert config["lora"]["rank"] == 2 and not config["lora"]["merged"]
    assert all(p.device == device for p in model.parameters())
    ids = np.array([encode_example(tok, ALPACA, ENTRIES[0])[0]])
    assert model(ids).shape == (1, ids.shape[1], tok.vocab_size)


def test_starts_from_a_hugging_face_folder(tmp_path, shared_data):
    tt.manual_seed(0)
    GPT(GPTConfig(vocab_size=50257, block_size=128, n_layer=1, n_head=2, n_embd=8)).save_pretrained(tmp_path / "hf")
    shutil.copy(shared_data / "gpt2" / "encoder.json", tmp_path / "hf" / "vocab.json")
    shutil.copy(shared_data / "gpt2" / "vocab.bpe", tmp_path / "hf" / "merges.txt")
    data = tmp_path / "d.json"
    data.write_text(json.dumps(ENTRIES))
    cfg = InstructConfig(init_from=str(tmp_path / "hf"), data=str(data), out=str(tmp_path / "out"), epochs=1,
                         lr=1e-3, eval_interval=0, n_responses=1, max_new_tokens=2)
    final = finetune_instruct(cfg, say=lambda s: None)
    assert np.isfinite(final["train_loss"])
    model, tok, _ = load_finetuned(tmp_path / "out")
    assert tok.vocab_size == 50257 and model.config.block_size == 128


def test_train_py_task_instruct_with_template_and_merged_lora(tmp_path, capsys, device):
    tok = tokenizer()
    write_base(tmp_path / "base", tok, n_layer=2)
    data = tmp_path / "d.json"
    data.write_text(json.dumps(ENTRIES * 2))
    template = {"with_input": "Q: {instruction} [{input}]\nA: ", "without_input": "Q: {instruction}\nA: "}
    (tmp_path / "t.json").write_text(json.dumps(template))
    train.main(["--task", "instruct", "--init-from", str(tmp_path / "base"), "--data", str(data),
                "--out", str(tmp_path / "inst"), "--epochs", "2", "--lr", "1e-2", "--eval-interval", "0",
                "--mask-prompt", "--prompt-template", str(tmp_path / "t.json"), "--lora-rank", "2",
                "--merge-lora", "--n-responses", "1", "--max-new-tokens", "4", "--device", device])
    assert "val loss" in capsys.readouterr().out
    config = json.loads((tmp_path / "inst" / "config.json").read_text())
    assert config["prompt_template"] == template and config["lora"]["merged"] and config["finetune"]["mask_prompt"]
    assert not (tmp_path / "inst" / "lora.safetensors").exists()
    # merged: a plain GPT whose weights differ from the base only where adapters were
    merged = tt.load(tmp_path / "inst" / "model.safetensors")
    base = tt.load(tmp_path / "base" / "model.safetensors")
    assert set(merged) == set(base)
    changed = {k for k in base if not np.array_equal(base[k], merged[k])}
    assert changed and all(k.endswith("weight") and (".attn.c_" in k or ".mlp.c_" in k) for k in changed)
    assert len((tmp_path / "inst" / "responses.jsonl").read_text().splitlines()) == 1


def test_mask_prompt_with_a_context_too_short_for_any_response_is_an_error(tmp_path):
    tok = tokenizer()
    write_base(tmp_path / "base", tok, block_size=12)   # every Alpaca prompt is longer than 12 tokens
    data = tmp_path / "d.json"
    data.write_text(json.dumps(ENTRIES))
    cfg = InstructConfig(init_from=str(tmp_path / "base"), data=str(data), out=str(tmp_path / "out"), epochs=1,
                         mask_prompt=True, eval_interval=0)
    with pytest.raises(ValueError, match="no training example has a token to learn"):
        finetune_instruct(cfg, say=lambda s: None)
