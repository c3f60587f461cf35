"""`python -m gpt chat`: talk to a model through its own chat template, or to one of our
instruction fine-tunes through its Alpaca template.

A conversation is kept and rendered whole each turn (templates may put
anything anywhere), then only the ids after the part the KV cache already
holds are run: the cache is cut back to the longest common prefix of what it
holds and the new prompt. A reply streams until the template's end-of-turn
token or one of the config's eos ids (see gpt/chat_template.py).
"""
from __future__ import annotations

import codecs
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

import tinytensor as tt
from bpe import Tokenizer
from gpt import GPT, GPTClassifier
from gpt.chat_template import ChatSpec, read_chat, render
from gpt.pretrained import is_gguf, read_config
from gpt.sampling import check_sampling, sample_next

from .chat_tuning import ChatPromptTemplate
from .checkpoint import resolve_checkpoint
from .settings import DEVICE, Sampling
from .flags import add_command, setting
from .folders import load_finetuned
from .inference import load_for_inference
from .instruct import PromptTemplate, generate_response


class Conversation:
    """The messages so far and a KV cache of the ids last run."""

    def __init__(self, model: GPT, tok: Tokenizer, spec: ChatSpec, system: str | None = None):
        self.model, self.tok, self.spec = model, tok, spec
        self.messages = [{"role": "system", "content": system}] if system else []
        self.caches = model.new_caches(1)
        self.cached: list[int] = []          # the ids whose keys and values the caches hold

    def prompt(self, max_new_tokens: int) -> list[int]:
        """The ids of the whole conversation; the oldest turns (not the system message) are dropped
        while it leaves fewer than max_new_tokens positions of the context."""
        while True:
            ids = self.tok.encode(render(self.spec, self.messages), allowed_special="all")
            first = 1 if self.messages[0]["role"] == "system" else 0
            if len(ids) + max_new_tokens <= self.model.config.block_size or len(self.messages) - first <= 1:
                break
            del self.messages[first:first + 2]   # a user message and its reply
        if len(ids) >= self.model.config.block_size:
            raise ValueError(f"the message takes {len(ids)} tokens, more than the model's context of "
                             f"{self.model.config.block_size}: send a shorter one")
        return ids

    def reply(self, text: str, max_new_tokens: int = 256, temperature: float = 0.0, top_k: int | None = None,
              top_p: float | None = None, rng: np.random.Generator | None = None) -> Iterator[int]:
        """Yield the ids of the assistant's answer to `text`, then record it in the conversation."""
        check_sampling(temperature, top_k, top_p)
        self.messages.append({"role": "user", "content": text})
        ids = self.prompt(max_new_tokens)
        keep = 0
        for a, b in zip(self.cached, ids[:-1]):    # at least one id is run, whose logits choose the first token
            if a != b:
                break
            keep += 1
        for cache in self.caches:
            cache.length = keep                    # later positions are overwritten as the new ids run
        self.cached = ids[:keep]
        limit = self.model.config.block_size
        new: list[int] = []
        pending = ids[keep:]
        rng = rng or np.random.default_rng()
        with tt.no_grad():
            while len(new) < max_new_tokens and len(self.cached) + len(pending) <= limit:
                logits = self.model(np.array([pending]), caches=self.caches, last_only=True)
                self.cached += pending
                nxt = int(sample_next(logits.numpy()[:, -1], temperature, top_k, top_p, rng)[0])
                if nxt in self.spec.stop_ids:
                    break
                new.append(nxt)
                yield nxt
                pending = [nxt]
        self.messages.append({"role": "assistant", "content": self.tok.decode(new)})


def _questions(interactive: bool, prompt: str) -> Iterator[str]:
    """Lines typed at a prompt (Ctrl-D ends) or piped in, one question each; blank ones skipped."""
    while True:
        try:
            line = input(prompt if interactive else "")
        except EOFError:
            return
        if line.strip():
            yield line


@dataclass(frozen=True)
class ChatSettings(Sampling):
    """Talk to a model through its chat template, one message per line (Ctrl-D ends); piped, one question
    per line. One of our instruction fine-tunes takes each line as an instruction in its Alpaca template."""
    checkpoint: str | None = setting(None, "a model with a chat template: a .gguf file, a Hugging Face folder "
                                     "(tokenizer_config.json's chat_template or chat_template.jinja), or one of our "
                                     "instruction fine-tunes (Alpaca)", required=True)
    system: str | None = setting(None, "a system message that opens the conversation", default_text="none")
    input: str = setting("", "an instruction fine-tune only: an input passed along with every instruction "
                         "(Alpaca's 'input')", default_text="none")
    device: str = DEVICE("cpu")


def chat(args: ChatSettings) -> None:
    path = resolve_checkpoint(args.checkpoint, print)     # a GGUF file is itself
    if not is_gguf(path) and read_config(path).get("task") in ("instruct", "dpo"):
        return _finetune_chat(args, path)
    model, tok = load_for_inference(path, device=args.device)
    if isinstance(model, GPTClassifier):
        sys.exit(f"error: {path} holds a classifier, which cannot chat")
    spec = read_chat(path, tok)
    if spec is None:
        sys.exit(f"error: {path} has no chat template (tokenizer_config.json's chat_template, chat_template.jinja "
                 "or a GGUF's tokenizer.chat_template): use python -m gpt sample to continue a text")
    _converse(model, tok, spec, args)


def _converse(model: GPT, tok: Tokenizer, spec: ChatSpec, args: ChatSettings) -> None:
    conversation = Conversation(model, tok, spec, args.system)
    rng = np.random.default_rng(args.seed)
    interactive = sys.stdin.isatty()
    for question in _questions(interactive, "you> "):
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for nxt in conversation.reply(question, args.max_new_tokens, args.temperature, args.top_k, args.top_p, rng):
            print(utf8.decode(tok.decode_bytes([nxt])), end="", flush=True)
        print(utf8.decode(b"", final=True), flush=True)


def _finetune_chat(args: ChatSettings, path: Path) -> None:
    """One of our instruction fine-tunes: each line is an instruction in its Alpaca template, or a
    turn of a conversation where it was tuned through its base's chat template."""
    model, tok, config = load_finetuned(path, device=args.device)
    template = PromptTemplate.from_dict(config["prompt_template"])
    if isinstance(template, ChatPromptTemplate):
        return _converse(model, tok, template.spec, args)
    for instruction in _questions(sys.stdin.isatty(), "instruction> "):
        print(generate_response(model, tok, template, instruction, args.input, args.max_new_tokens,
                                args.temperature, args.seed), flush=True)


def add_parser(sub: Any) -> None:
    """Register `chat` on the subcommand parsers of python -m gpt."""
    add_command(sub, "chat", ChatSettings, chat, "talk to a model through its chat template, one message per line "
                                                 "(Ctrl-D ends); piped, one question per line")
