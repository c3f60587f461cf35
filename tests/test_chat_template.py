"""Chat templates (gpt/chat_template.py) and `python -m gpt chat` (gpt/train/chat.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("jinja2")

from bpe import Tokenizer  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402
from gpt.chat_template import ChatSpec, end_of_turn, read_chat, render, stop_ids  # noqa: E402
from gpt.train.chat import Conversation  # noqa: E402

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    text = "user assistant system hello how are you what is the capital of France Paris " * 20
    return Tokenizer.train(text, vocab_size=256 + 30 + 3, special_tokens=SPECIALS, progress=False)


def test_render_chatml():
    spec = ChatSpec(CHATML)
    text = render(spec, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert not render(spec, [{"role": "user", "content": "Hi"}], add_generation_prompt=False).endswith("assistant\n")


def test_bos_token_and_raise_exception_reach_the_template():
    spec = ChatSpec("{{ bos_token }}{% if messages[0]['role'] != 'user' %}{{ raise_exception('users first') }}"
                    "{% endif %}{{ messages[0]['content'] | tojson }}", bos_token="<s>")
    assert render(spec, [{"role": "user", "content": 'say "hi"'}]) == '<s>"say \\"hi\\""'
    with pytest.raises(ValueError, match="users first"):
        render(spec, [{"role": "system", "content": "x"}])


@pytest.mark.parametrize("template", ["{{ messages.__class__.__mro__ }}", "{{ ''.__class__.__subclasses__() }}",
                                      "{% set _ = messages.append(1) %}", "{{ messages[0].update({'role': 'x'}) }}"])
def test_a_template_cannot_reach_python_or_change_the_messages(template):
    messages = [{"role": "user", "content": "Hi"}]
    with pytest.raises(ValueError, match="chat template failed"):
        render(ChatSpec(template), messages)
    assert messages == [{"role": "user", "content": "Hi"}]


def test_end_of_turn_is_found_from_the_template(tok):
    assert end_of_turn(ChatSpec(CHATML), tok) == tok.special_tokens["<|im_end|>"]
    assert end_of_turn(ChatSpec("{% for m in messages %}{{ m['content'] }}\n{% endfor %}"), tok) is None


def test_hugging_face_folder_template_and_eos_ids(tmp_path, tok):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML, "eos_token": {"content": "<|im_end|>"}}))
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [tok.special_tokens["<|im_start|>"], 10**9]}))
    spec = read_chat(tmp_path, tok)
    assert spec.template == CHATML and spec.eos_token == "<|im_end|>"
    # the config's ids (one out of range dropped), <|endoftext|>, and the template's end of turn
    assert set(spec.stop_ids) == {tok.special_tokens[name] for name in SPECIALS}
    assert stop_ids(tmp_path, tok) == sorted(tok.special_tokens[n] for n in ("<|endoftext|>", "<|im_start|>"))
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert read_chat(tmp_path, tok).template == "{{ messages[0]['content'] }}"


def test_named_templates_take_the_default(tmp_path, tok):
    named = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": CHATML}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    assert read_chat(tmp_path, tok).template == CHATML
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({}))
    assert read_chat(tmp_path, tok) is None


def _model(tok) -> GPT:
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=2, n_head=2, n_embd=32, pos="rope",
                    mlp="swiglu", norm="rmsnorm", bias=False)
    return GPT(cfg).eval()


def test_multi_turn_reuses_the_cache_and_answers_as_a_fresh_run(tok, monkeypatch):
    model = _model(tok)
    spec = ChatSpec(CHATML, stop_ids=(tok.special_tokens["<|im_end|>"],))
    chat = Conversation(model, tok, spec, system="Be brief.")
    first = list(chat.reply("hello how are you", max_new_tokens=8))
    run = []
    real = GPT.forward
    monkeypatch.setattr(GPT, "forward", lambda self, idx, *a, **k: run.append(np.shape(idx)[-1]) or real(self, idx, *a, **k))
    second = list(chat.reply("what is the capital of France", max_new_tokens=8))
    monkeypatch.undo()
    prompt = tok.encode(render(spec, chat.messages[:-1]), allowed_special="all")
    assert run[0] < len(prompt) // 2            # most of the conversation came from the cache
    fresh = model.generate([prompt], 8, temperature=0, eos_id=list(spec.stop_ids))[0, len(prompt):].tolist()
    fresh = fresh[:fresh.index(spec.stop_ids[0])] if spec.stop_ids[0] in fresh else fresh
    assert second == fresh and len(first) > 0
    assert chat.messages[-1] == {"role": "assistant", "content": tok.decode(second)}


def test_old_turns_are_dropped_when_the_context_fills(tok):
    model = _model(tok)
    chat = Conversation(model, tok, ChatSpec(CHATML), system="S")
    for _ in range(12):
        list(chat.reply("hello how are you what is the capital", max_new_tokens=16))
    assert chat.messages[0] == {"role": "system", "content": "S"}
    assert len(tok.encode(render(chat.spec, chat.messages), allowed_special="all")) <= model.config.block_size


def test_stream_stops_at_any_id_of_a_list(tok):
    model = _model(tok)
    first = int(model.generate([[5, 6]], 1, temperature=0)[0, -1])
    assert model.generate([[5, 6]], 10, temperature=0, eos_id=[10**6, first]).shape == (1, 3)


@pytest.mark.slow
def test_chat_command_on_the_real_gguf(shared_data):
    path = shared_data / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    out = subprocess.run([sys.executable, "-m", "gpt", "chat", "--checkpoint", str(path), "--temperature", "0",
                          "--max-new-tokens", "20"], input="What is the capital of France?\n", capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout


def test_without_jinja2_the_error_names_the_extra(monkeypatch):
    for name in ("jinja2", "jinja2.sandbox"):            # imported already by the tests above
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'tinygpt\[chat\]'"):
        render(ChatSpec(CHATML), [{"role": "user", "content": "Hi"}])
