"""Command line for a trained model:

    python -m gpt sample --checkpoint DIR --prompt "..."     continue a text
    python -m gpt classify --checkpoint DIR "some text"      label and probability (a classify fine-tune)
    python -m gpt chat --checkpoint DIR|X.gguf               talk to it through its chat template (an instruct fine-tune: Alpaca)
    python -m gpt export --checkpoint DIR --out HF_DIR       a Hugging Face folder (GPT-2, Llama, Qwen2 or Qwen3)
    python -m gpt eval --checkpoint DIR --data FILE          perplexity, bits per byte; or --choices, --instruct
    python -m gpt harness --checkpoint DIR --tasks T         lm-evaluation-harness tasks (pip install 'tinygpt[eval]')
    python -m gpt prepare --data PATH... --out DIR           token shards for train.py --data DIR (see --help)
"""
from __future__ import annotations

import argparse
import codecs
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, Callable

from gpt import GPTClassifier
from gpt.chat_template import read_chat, stop_ids
from gpt.lora import merge_lora

from . import chat, evaluate, harness
from .checkpoint import resolve_checkpoint
from .classify import classify_texts
from .settings import CHECKPOINT, DEVICE, MAX_NEW_TOKENS, TEMPERATURE, Sampling
from .data import EOT
from .distributed import check_device_ready
from .flags import Settings, add_command, given_in, setting
from .folders import check_export_folder, export_folder, load_finetuned
from .inference import load_for_inference
from .prepare import command as prepare_command


@dataclass(frozen=True)
class SampleSettings(Sampling):
    """Continue a text from a checkpoint, printed as it comes."""
    checkpoint: str | None = CHECKPOINT(None)
    prompt: str = setting("", "text to continue", default_text="start of a document")
    stop_at_eos: bool = setting(True, "stop at <|endoftext|> and the config's eos_token_id", default_text="yes")
    device: str = DEVICE("cpu")
    max_new_tokens: int = MAX_NEW_TOKENS(200)
    temperature: float = TEMPERATURE(0.8)


@dataclass(frozen=True)
class ClassifyTextSettings(Settings):
    """Print the label and its probability for each text, one line per text (a blank line for a blank one)."""
    checkpoint: str | None = setting(None, "the output folder of a classification fine-tune", required=True)
    text: tuple[str, ...] = setting((), "texts to classify", positional=True, nargs="*",
                                    default_text="one per line from stdin")
    device: str = DEVICE("cpu")


@dataclass(frozen=True)
class ExportSettings(Settings):
    """Write a model as a Hugging Face folder (config.json, model.safetensors, tokenizer.json);
    the LoRA adapters of a fine-tune are merged into its weights."""
    checkpoint: str | None = CHECKPOINT(None)
    out: str | None = setting(None, "the folder to write; it must not hold a model already (unless --overwrite) "
                              "nor be a training run's folder", required=True)
    overwrite: bool = setting(False, "replace a model already in --out")


def sample(args: SampleSettings) -> None:
    model, tok = load_for_inference(args.checkpoint, device=args.device)
    if isinstance(model, GPTClassifier):
        sys.exit(f"error: {args.checkpoint} holds a classifier, which labels texts rather than continuing them: "
                 f'use python -m gpt classify --checkpoint {args.checkpoint} "some text"')
    prompt = args.prompt if args.prompt else EOT
    ids = tok.encode(prompt, allowed_special="all")
    if not ids:
        sys.exit("the prompt encodes to no tokens: give a non-empty --prompt")
    eos = stop_ids(resolve_checkpoint(args.checkpoint, lambda _: None), tok)   # the config's eos_token_id(s) and <|endoftext|>
    if args.prompt:
        print(args.prompt, end="", flush=True)
    # a UTF-8 character may span several tokens: the incremental decoder holds back an
    # unfinished one, and replaces bytes that can never become a character
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for nxt in model.stream([ids], args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                            eos_id=eos if args.stop_at_eos and eos else None, seed=args.seed):
        print(utf8.decode(tok.decode_bytes([int(nxt[0])])), end="", flush=True)
    print(utf8.decode(b"", final=True))


def classify(args: ClassifyTextSettings) -> None:
    model, tok, config = load_finetuned(args.checkpoint, device=args.device)
    if config["task"] != "classify":
        sys.exit(f"error: {args.checkpoint} holds a model for task {config['task']!r}, not a classifier")
    # one output line per input line, in order, so labels line up with their texts (`paste`);
    # a blank line has nothing to classify and gets a blank line
    texts = args.text or [line.rstrip("\r\n") for line in sys.stdin]
    given = [i for i, text in enumerate(texts) if text.strip()]
    results = dict(zip(given, classify_texts(model, tok, config["labels"], [texts[i] for i in given],
                                             config["finetune"]["max_length"]))) if given else {}
    for i in range(len(texts)):
        print(f"{results[i][0]}\t{results[i][1]:.4f}" if i in results else "")


def export(args: ExportSettings) -> None:
    check_export_folder(args.out, args.overwrite)            # before the model is read
    model, tok = load_for_inference(args.checkpoint)
    if isinstance(model, GPTClassifier):
        sys.exit(f"error: {args.checkpoint} holds a classifier; only a language model is exported")
    chat_spec = read_chat(resolve_checkpoint(args.checkpoint, lambda _: None), tok)   # kept, so the folder chats
    kind = export_folder(merge_lora(model), tok, args.out, chat_spec, args.overwrite)   # LoRA adapters, if any, folded into the weights
    print(f"wrote a Hugging Face {kind} folder to {args.out}: transformers' AutoModelForCausalLM and "
          "GPT.from_pretrained open it")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m gpt", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    add_command(sub, "sample", SampleSettings, sample, "generate text from a checkpoint, printed as it comes")
    add_command(sub, "classify", ClassifyTextSettings, classify, "print the label and its probability for each text")
    chat.add_parser(sub)                      # python -m gpt chat: gpt/train/chat.py
    add_command(sub, "export", ExportSettings, export,
                "write a model as a Hugging Face folder (config.json, model.safetensors, tokenizer.json)")
    evaluate.add_parser(sub)                  # python -m gpt eval: gpt/train/evaluate.py
    harness.add_parser(sub)                   # python -m gpt harness: gpt/train/harness.py
    prepare_command.register(sub)             # python -m gpt prepare: gpt/train/prepare/
    return ap


def parse(argv: list[str] | None) -> tuple[Callable[[Any], Any], Settings]:
    """(the command, its settings): every value checked, a bad one a ValueError naming its flag."""
    args = build_parser().parse_args(argv)
    return args.func, args.settings(**given_in(args, skip=("command", "func", "settings")))


def main(argv: list[str] | None = None) -> None:
    try:
        run, settings = parse(argv)
        if hasattr(settings, "device"):
            check_device_ready(settings.device)
        run(settings)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:   # ImportError: an extra to install
        sys.exit(f"error: {e}")
    except BrokenPipeError:
        # the reader went away (`python -m gpt sample ... | head`): stop quietly, as cat does;
        # stdout goes to devnull so that Python's flush at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)


if __name__ == "__main__":
    main()
