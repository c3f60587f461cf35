"""Instruction tuning through a base's own chat template (gpt/train/chat_tuning.py): the mask covers
the assistant's turn only, the choice of template, and chat / eval on the fine-tune."""
from __future__ import annotations

import io
import json

import pytest

pytest.importorskip("jinja2")

import train  # noqa: E402

from bpe import Tokenizer  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402
from gpt.chat_template import ChatSpec, read_chat  # noqa: E402
from gpt.train.chat_tuning import ChatPromptTemplate, choose_template  # noqa: E402
from gpt.train.cli import main  # noqa: E402
from gpt.train.evaluate import response_nll  # noqa: E402
from gpt.train.folders import export_folder, load_finetuned  # noqa: E402
from gpt.train.instruct import ALPACA, PromptTemplate, collate  # noqa: E402
from tinytensor.functional import IGNORE_INDEX  # noqa: E402

# ChatML, with a default system message when the conversation has none (as SmolLM2's template does)
CHATML = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe kind.<|im_end|>\n' }}{% endif %}"
          "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ENTRIES = [{"instruction": "Say hello", "input": "", "output": "Hello world"},
           {"instruction": "Add", "input": "2 and 3", "output": "5"}] * 4


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    text = "system user assistant Be kind. Say hello Hello world Add 2 and 3 5 " * 20
    return Tokenizer.train(text, vocab_size=256 + 30 + len(SPECIALS), special_tokens=SPECIALS, progress=False)


def base(folder, tok: Tokenizer, template: str | None = CHATML) -> GPT:
    """A tiny Llama-style Hugging Face folder, with `template` as its chat template."""
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=96, n_layer=1, n_head=2, n_embd=32, pos="rope",
                          mlp="swiglu", norm="rmsnorm", bias=False, intermediate_size=64))
    spec = None if template is None else ChatSpec(template, "", "<|im_end|>", (tok.special_tokens["<|im_end|>"],))
    export_folder(model, tok, folder, chat=spec)
    return model


def hand_reply(folder, tok: Tokenizer, max_new_tokens: int) -> str:
    """The fine-tune's greedy reply to "Say hello" after the ChatML prompt written out by hand."""
    model = load_finetuned(folder)[0].eval()
    im_end = tok.special_tokens["<|im_end|>"]
    prompt = tok.encode("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nSay hello<|im_end|>\n"
                        "<|im_start|>assistant\n", allowed_special="all")
    new = [int(t) for t in model.generate([prompt], max_new_tokens, temperature=0.0, eos_id=[im_end])[0, len(prompt):]]
    return tok.decode(new[:new.index(im_end)] if im_end in new else new)


def test_the_mask_covers_the_assistants_turn_and_its_end_only(tok):
    template = ChatPromptTemplate(ChatSpec(CHATML))
    im_start, im_end = tok.special_tokens["<|im_start|>"], tok.special_tokens["<|im_end|>"]

    def text(s: str) -> list[int]:
        return tok.encode(s)

    for entry, user in ((ENTRIES[0], "Say hello"), (ENTRIES[1], "Add\n\n2 and 3")):
        # the template's strings, by hand: system and user turns, then the assistant's header
        prompt = ([im_start] + text("system\nBe kind.") + [im_end] + text("\n") + [im_start] + text("user\n" + user)
                  + [im_end] + text("\n") + [im_start] + text("assistant\n"))
        reply = text(entry["output"]) + [im_end]          # not the "\n" the template writes after the turn
        ids, prompt_len = template.encode(tok, entry)
        assert (ids, prompt_len) == (prompt + reply, len(prompt))
        _, targets, _ = collate([(ids, prompt_len)], pad_id=0, mask_prompt=True)
        assert targets[targets != IGNORE_INDEX].tolist() == reply


def test_a_template_whose_reply_does_not_follow_its_prompt_is_an_error(tok):
    odd = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|im_start|>{% endif %}"
    with pytest.raises(ValueError, match="does not start with"):
        ChatPromptTemplate(ChatSpec(odd)).encode(tok, ENTRIES[0])


def test_a_template_that_ends_no_turn_is_an_error(tok):
    plain = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ValueError, match="writes no special token after the assistant's reply"):
        ChatPromptTemplate(ChatSpec(plain)).encode(tok, ENTRIES[0])


@pytest.mark.parametrize("stored, message", [
    ({"kind": "chat", "template": 3, "bos_token": "", "eos_token": "", "stop_ids": []}, "prompt_template.template"),
    ({"kind": "chat", "template": CHATML, "bos_token": "", "eos_token": "", "stop_ids": [-1]}, "stop_ids must be"),
])
def test_a_stored_chat_template_is_checked_field_by_field(stored, message):
    with pytest.raises(ValueError, match=message):
        PromptTemplate.from_dict(stored)


def test_chat_on_a_base_without_a_template_is_an_error(tmp_path, tok):
    base(tmp_path / "plain", tok, template=None)
    with pytest.raises(ValueError, match="has no chat template"):
        choose_template("chat", tmp_path / "plain", tok, say=print)


def test_alpaca_stays_the_default_without_a_template_and_chat_is_the_default_with_one(tmp_path, tok):
    said: list[str] = []
    base(tmp_path / "plain", tok, template=None)
    base(tmp_path / "chatml", tok)
    assert choose_template(None, tmp_path / "plain", tok, said.append) is ALPACA
    chosen = choose_template(None, tmp_path / "chatml", tok, said.append)
    assert isinstance(chosen, ChatPromptTemplate) and chosen.spec.template == CHATML
    assert said[0].startswith("prompt template: Alpaca's") and said[1].startswith("prompt template: the base's chat")


def test_a_stored_chat_template_is_checked(tok):
    stored = ChatPromptTemplate(ChatSpec(CHATML, "", "<|im_end|>", (5,))).to_dict()
    again = PromptTemplate.from_dict(stored)
    assert isinstance(again, ChatPromptTemplate) and again.to_dict() == stored
    with pytest.raises(ValueError, match="prompt_template.stop_ids"):
        PromptTemplate.from_dict({**stored, "stop_ids": ["x"]})
    with pytest.raises(ValueError, match="prompt_template.template"):
        PromptTemplate.from_dict({**stored, "template": 3})


def test_instruct_run_from_a_chat_base_then_chat_and_eval_through_its_template(tmp_path, tok, monkeypatch, capsys):
    base(tmp_path / "base", tok)
    (tmp_path / "d.json").write_text(json.dumps(ENTRIES * 2))
    train.main(["--task", "instruct", "--init-from", str(tmp_path / "base"), "--data", str(tmp_path / "d.json"),
                "--out", str(tmp_path / "tuned"), "--epochs", "3", "--lr", "1e-2", "--eval-interval", "0",
                "--mask-prompt", "--n-responses", "1", "--max-new-tokens", "4"])
    assert "prompt template: the base's chat template" in capsys.readouterr().out
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["prompt_template"]["kind"] == "chat" and config["prompt_template"]["template"] == CHATML

    # chat answers through the template: the greedy continuation of the prompt written by hand
    monkeypatch.setattr("sys.stdin", io.StringIO("Say hello\n"))
    main(["chat", "--checkpoint", str(tmp_path / "tuned"), "--max-new-tokens", "6"])
    assert capsys.readouterr().out == hand_reply(tmp_path / "tuned", tok, 6) + "\n"
    model, tok2, _ = load_finetuned(tmp_path / "tuned")

    # eval --instruct reads the stored template: the NLL is over each reply and its <|im_end|>
    template = PromptTemplate.from_dict(config["prompt_template"])
    _, count = response_nll(model, tok2, template, ENTRIES[:2], batch_size=2)
    assert count == len(tok.encode("Hello world")) + 1 + len(tok.encode("5")) + 1
    assert read_chat(tmp_path / "base", tok) is not None


def test_a_chat_fine_tune_tuned_again_keeps_its_template(tmp_path, tok):
    base(tmp_path / "base", tok)
    (tmp_path / "d.json").write_text(json.dumps(ENTRIES))
    args = ["--task", "instruct", "--data", str(tmp_path / "d.json"), "--epochs", "1", "--eval-interval", "0",
            "--n-responses", "0"]
    train.main(args + ["--init-from", str(tmp_path / "base"), "--out", str(tmp_path / "once")])
    train.main(args + ["--init-from", str(tmp_path / "once"), "--out", str(tmp_path / "twice")])
    stored = json.loads((tmp_path / "twice" / "config.json").read_text())["prompt_template"]
    assert stored["kind"] == "chat" and stored["template"] == CHATML


def test_prompt_template_chat_from_a_gguf(tmp_path, tok, monkeypatch, capsys):
    pytest.importorskip("gguf")
    from test_gguf import gguf_tensors, tiny, write_gguf

    model = tiny(vocab_size=tok.vocab_size, block_size=96)
    path = tmp_path / "base.gguf"
    write_gguf(path, model.config, gguf_tensors(model, "llama", permute=True), tok,
               extra=lambda w: w.add_chat_template(CHATML))
    (tmp_path / "d.json").write_text(json.dumps(ENTRIES))
    train.main(["--task", "instruct", "--init-from", str(path), "--prompt-template", "chat", "--mask-prompt",
                "--data", str(tmp_path / "d.json"), "--out", str(tmp_path / "tuned"), "--epochs", "1",
                "--eval-interval", "0", "--lora-rank", "4", "--n-responses", "0"])
    stored = json.loads((tmp_path / "tuned" / "config.json").read_text())["prompt_template"]
    assert stored["kind"] == "chat" and stored["template"] == CHATML
    assert tok.special_tokens["<|im_end|>"] in stored["stop_ids"]
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("Say hello\n"))
    main(["chat", "--checkpoint", str(tmp_path / "tuned"), "--max-new-tokens", "3"])
    assert capsys.readouterr().out == hand_reply(tmp_path / "tuned", tok, 3) + "\n"
