"""Instruction tuning through a base model's own chat template (`--prompt-template chat`).

    ChatPromptTemplate(spec)        an instruction as a conversation, rendered by the model's template
    choose_template(setting, ...)   which template a run uses: a JSON file, "chat", or the default

Each example is the conversation [user: instruction (+ "\\n\\n" + input), assistant: output].
The assistant's span is found from the template's own renderings, never from a
guess at its markup:

    prompt = render(messages without the reply, add_generation_prompt=True)
    full   = render(messages with the reply,    add_generation_prompt=False)

`full` must start with `prompt`; what follows is the response. The prompt and
the response are tokenized separately (special tokens as the template writes
them), so the model learns to continue exactly the ids chat gives it, and the
response is cut right after its end-of-turn token: the mask (collate's
mask_prompt) covers the reply and the token that ends it, nothing of the
system or user turns, the template's markup, or what follows the turn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bpe import Tokenizer
from gpt.chat_template import ChatSpec, end_of_turn, read_chat, render
from gpt.pretrained import CONFIG_FILE, is_gguf, read_config

from .instruct import ALPACA, PromptTemplate

CHAT = "chat"       # the --prompt-template value that asks for the base's chat template


class ChatPromptTemplate:
    """A model's chat template used as an instruction template (the interface of PromptTemplate)."""

    def __init__(self, spec: ChatSpec):
        self.spec = spec

    @staticmethod
    def messages(instruction: str, input: str = "") -> list[dict[str, str]]:
        content = instruction + ("\n\n" + input if input.strip() else "")
        return [{"role": "user", "content": content}]

    def prompt(self, instruction: str, input: str = "") -> str:
        return render(self.spec, self.messages(instruction, input), add_generation_prompt=True)

    def prompt_ids(self, tok: Tokenizer, instruction: str, input: str = "") -> list[int]:
        return tok.encode(self.prompt(instruction, input), allowed_special="all")

    def encode(self, tok: Tokenizer, entry: dict[str, str]) -> tuple[list[int], int]:
        """(prompt ids + the assistant turn's ids up to and with its end-of-turn token, number of prompt ids)."""
        messages = self.messages(entry["instruction"], entry.get("input", ""))
        prompt = render(self.spec, messages, add_generation_prompt=True)
        full = render(self.spec, messages + [{"role": "assistant", "content": entry["output"]}],
                      add_generation_prompt=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template's rendering of a conversation with the assistant's reply does not "
                             "start with its rendering of the prompt (add_generation_prompt=True), so the reply's "
                             f"tokens cannot be told apart: template {self.spec.template[:80]!r}...; use "
                             "--prompt-template with an Alpaca-style JSON file instead")
        turn_end = self.turn_end(tok)
        response = tok.encode(full[len(prompt):], allowed_special="all")
        if turn_end in response:        # cut after the last: the reply's own text may spell the token
            response = response[:len(response) - response[::-1].index(turn_end)]
        else:
            raise ValueError(f"the chat template wrote no end-of-turn token after the reply {entry['output'][:40]!r}: "
                             "check the example or use an Alpaca-style --prompt-template")
        ids = tok.encode(prompt, allowed_special="all")
        return ids + response, len(ids)

    def turn_end(self, tok: Tokenizer) -> int:
        turn_end = end_of_turn(self.spec, tok)
        if turn_end is None:
            raise ValueError("the chat template writes no special token after the assistant's reply, so a fine-tune "
                             "could not learn where a turn ends: use an Alpaca-style --prompt-template")
        return turn_end

    def stop_ids(self, tok: Tokenizer) -> list[int]:
        return sorted(set(self.spec.stop_ids) | {self.turn_end(tok)})

    def to_dict(self) -> dict[str, Any]:
        return {"kind": CHAT, "template": self.spec.template, "bos_token": self.spec.bos_token,
                "eos_token": self.spec.eos_token, "stop_ids": list(self.spec.stop_ids)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ChatPromptTemplate":
        """From a config.json's prompt_template (untrusted: each field is checked)."""
        for name in ("template", "bos_token", "eos_token"):
            if not isinstance(d.get(name), str):
                raise ValueError(f"prompt_template.{name} must be a string (a chat template as a fine-tune saves it)")
        stops = d.get("stop_ids")
        if not isinstance(stops, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                  for i in stops):
            raise ValueError("prompt_template.stop_ids must be a list of token ids")
        return cls(ChatSpec(d["template"], d["bos_token"], d["eos_token"], tuple(stops)))


def _tuned_through_chat(base: Path) -> ChatSpec | None:
    """The chat template one of our fine-tunes was tuned through (its config's prompt_template), if any."""
    if is_gguf(base) or not (base / CONFIG_FILE).is_file():
        return None
    config = read_config(base)
    stored = config.get("prompt_template") if config.get("task") in ("instruct", "dpo") else None
    return ChatPromptTemplate.from_dict(stored).spec if isinstance(stored, dict) and stored.get("kind") == CHAT else None


def choose_template(setting: str | None, base: Path, tok: Tokenizer,
                    say: Callable[[str], None]) -> PromptTemplate | ChatPromptTemplate:
    """--prompt-template: a JSON file, "chat" (the base's chat template, an error without one), or by
    default the base's chat template where it has one and Alpaca's where it has none. Says which."""
    if setting is not None and setting != CHAT:
        say(f"prompt template: {setting}")
        return PromptTemplate.from_file(setting)
    spec = read_chat(base, tok) or _tuned_through_chat(base)
    if spec is None:
        if setting == CHAT:
            raise ValueError(f"--prompt-template chat: {base} has no chat template (tokenizer_config.json's "
                             "chat_template, chat_template.jinja or a GGUF's tokenizer.chat_template); drop the "
                             "option for Alpaca's template or give a JSON file")
        say("prompt template: Alpaca's (the base has no chat template)")
        return ALPACA
    template = ChatPromptTemplate(spec)
    turn_end = template.turn_end(tok)    # a template that ends no turn is an error now, before training
    say(f"prompt template: the base's chat template (turns end with {tok.decode([turn_end])!r})")
    return template
