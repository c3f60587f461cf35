"""A model's own chat template: where it is kept, rendering it safely, and the ids that end a turn.

    read_chat(path, tok)        ChatSpec of a GGUF file or a Hugging Face folder (None: it has no template)
    render(spec, messages)      the prompt text of a conversation, ending where the assistant speaks
    stop_ids(path, tok)         eos_token_id(s) of the model's config (and <|endoftext|>), for sampling

Templates are Jinja, written by the model's author: code from the file. They
are rendered, as transformers renders them, in jinja2's
ImmutableSandboxedEnvironment, which refuses attribute access to Python
internals and any mutation of the values passed in, with the variables
templates expect: `messages`, `add_generation_prompt`, `bos_token`,
`eos_token`, `raise_exception`, `strftime_now`, and the `tojson` filter.

Where they are kept:
    GGUF                 metadata tokenizer.chat_template; bos/eos from tokenizer.ggml.{bos,eos}_token_id
    Hugging Face folder  chat_template.jinja, or tokenizer_config.json's chat_template (a string, or a
                         list of {name, template} whose "default" is taken), bos_token, eos_token;
                         config.json's (or generation_config.json's) eos_token_id, an id or a list

The end of the assistant's turn is found from the template itself: a
conversation with a known assistant reply is rendered, and the first special
token after that reply is the one that ends a turn (<|im_end|> for ChatML,
<|eot_id|> for Llama 3).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from bpe import Tokenizer

from .files import CONFIG_FILE, read_json_object
from .pretrained import is_gguf

TOKENIZER_CONFIG = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"
GENERATION_CONFIG = "generation_config.json"
EOT = "<|endoftext|>"
EXTRA = "pip install 'tinygpt[chat]'"


@dataclass(frozen=True)
class ChatSpec:
    template: str
    bos_token: str = ""
    eos_token: str = ""
    stop_ids: tuple[int, ...] = ()      # the template's end of turn, and the config's eos ids


def _environment() -> Any:
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ImportError(f"chat templates are rendered with jinja2: {EXTRA}") from None

    def raise_exception(message: str) -> None:
        from jinja2.exceptions import TemplateError

        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


@lru_cache(maxsize=8)
def _compiled(source: str) -> Any:
    """The template compiled once: compiling takes about a hundred times as long as rendering,
    and chat tuning renders every example twice (its errors are raised, never cached)."""
    return _environment().from_string(source)


def render(spec: ChatSpec, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The template applied to `messages` [{"role", "content"}]; errors in the template name it."""
    _environment()                        # first: without jinja2, the error that names the extra
    from jinja2.exceptions import TemplateError

    try:
        return _compiled(spec.template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                               bos_token=spec.bos_token, eos_token=spec.eos_token)
    except TemplateError as exc:
        raise ValueError(f"the model's chat template failed: {exc}") from None


def end_of_turn(spec: ChatSpec, tok: Tokenizer) -> int | None:
    """The special token the template writes right after an assistant's reply (None: none does)."""
    reply = "Reply-marker-7f3a"
    text = render(spec, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": reply}],
                  add_generation_prompt=False)
    after = text[text.rindex(reply) + len(reply):] if reply in text else ""
    specials = set(tok.special_tokens.values())
    return next((i for i in tok.encode(after, allowed_special="all") if i in specials), None)


def _token_text(value: Any) -> str:
    """bos_token / eos_token of a tokenizer_config.json: a string, or an AddedToken's {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def _ids(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _read_folder(folder: Path) -> tuple[str | None, str, str]:
    """(template, bos_token, eos_token) of a Hugging Face folder."""
    config = read_json_object(folder / TOKENIZER_CONFIG) if (folder / TOKENIZER_CONFIG).is_file() else {}
    template = config.get("chat_template")
    if isinstance(template, list):           # named templates: the default one
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                        None)
    if (folder / TEMPLATE_FILE).is_file():
        template = (folder / TEMPLATE_FILE).read_text(encoding="utf-8")
    if template is not None and not isinstance(template, str):
        raise ValueError(f"{folder / TOKENIZER_CONFIG}: chat_template is not a string")
    return template, _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))


def stop_ids(path: str | os.PathLike, tok: Tokenizer) -> list[int]:
    """The ids that end generation: the model config's eos_token_id (an id or a list; a GGUF's
    tokenizer.ggml.eos_token_id) and <|endoftext|> where the tokenizer has it."""
    path = Path(path)
    ids: list[int] = []
    if is_gguf(path):
        from bpe.gguf import open_gguf, special_ids

        ids = [special_ids(open_gguf(path)).get("eos")]
    else:
        for name in (CONFIG_FILE, GENERATION_CONFIG):
            if (path / name).is_file():
                ids += _ids(read_json_object(path / name).get("eos_token_id"))
    if EOT in tok.special_tokens:
        ids.append(tok.special_tokens[EOT])
    return sorted({i for i in ids if i is not None and 0 <= i < tok.vocab_size})


def read_chat(path: str | os.PathLike, tok: Tokenizer) -> ChatSpec | None:
    """The chat template of a GGUF file or a Hugging Face folder, with its bos/eos texts and the ids
    that end a reply; None when the model carries no template."""
    path = Path(path)
    if is_gguf(path):
        from bpe.gguf import metadata, open_gguf, special_ids

        reader = open_gguf(path)
        template = metadata(reader, "tokenizer.chat_template", str, None)
        named = special_ids(reader)
        bos, eos = (tok.decode([named[k]]) if k in named and named[k] < tok.vocab_size else "" for k in ("bos", "eos"))
    else:
        template, bos, eos = _read_folder(path)
    if template is None:
        return None
    spec = ChatSpec(template, bos, eos)
    stops = set(stop_ids(path, tok)) | ({tok.special_tokens[eos]} if eos in tok.special_tokens else set())
    turn_end = end_of_turn(spec, tok)
    if turn_end is not None:
        stops.add(turn_end)
    return ChatSpec(template, bos, eos, tuple(sorted(stops)))
