"""Command line for a trained model:

    python -m gpt sample --checkpoint DIR --prompt "..."     continue a text
    python -m gpt classify --checkpoint DIR "some text"      label and probability (a classify fine-tune)
    python -m gpt chat --checkpoint DIR                      answer instructions typed at the prompt (an instruct fine-tune)
    python -m gpt export --checkpoint DIR --out HF_DIR       a Hugging Face folder (GPT-2, Llama, Qwen2 or Qwen3)
"""
from __future__ import annotations

import argparse
import codecs
import sys

from gpt import GPTClassifier
from gpt.lora import merge_lora

from .data import EOT
from .finetune import classify_texts
from .inference import export_folder, load_finetuned, load_for_inference
from .instruct import PromptTemplate, generate_response


def sample(args: argparse.Namespace) -> None:
    model, tok = load_for_inference(args.checkpoint, device=args.device)
    if isinstance(model, GPTClassifier):
        sys.exit(f"error: {args.checkpoint} holds a classifier, which labels texts rather than continuing them: "
                 f'use python -m gpt classify --checkpoint {args.checkpoint} "some text"')
    prompt = args.prompt if args.prompt else EOT
    ids = tok.encode(prompt, allowed_special="all")
    if not ids:
        sys.exit("the prompt encodes to no tokens: give a non-empty --prompt")
    eos = tok.special_tokens.get(EOT)
    if args.prompt:
        print(args.prompt, end="", flush=True)
    # a UTF-8 character may span several tokens: the incremental decoder holds back an
    # unfinished one, and replaces bytes that can never become a character
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for nxt in model.stream([ids], args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                            eos_id=eos if args.stop_at_eos else None, seed=args.seed):
        print(utf8.decode(tok.decode_bytes([int(nxt[0])])), end="", flush=True)
    print(utf8.decode(b"", final=True))


def classify(args: argparse.Namespace) -> None:
    model, tok, config = load_finetuned(args.checkpoint, device=args.device)
    if config["task"] != "classify":
        sys.exit(f"error: {args.checkpoint} holds a model for task {config['task']!r}, not a classifier")
    texts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for label, prob in classify_texts(model, tok, config["labels"], texts, config["finetune"]["max_length"]):
        print(f"{label}\t{prob:.4f}")


def chat(args: argparse.Namespace) -> None:
    model, tok, config = load_finetuned(args.checkpoint, device=args.device)
    if config["task"] not in ("instruct", "dpo"):
        sys.exit(f"error: {args.checkpoint} holds a model for task {config['task']!r}, not an instruction-tuned one")
    template = PromptTemplate.from_dict(config["prompt_template"])
    interactive = sys.stdin.isatty()
    while True:
        try:
            instruction = input("instruction> " if interactive else "")
        except EOFError:
            break
        if not instruction.strip():
            continue
        print(generate_response(model, tok, template, instruction, args.input, args.max_new_tokens,
                                args.temperature, args.seed), flush=True)


def export(args: argparse.Namespace) -> None:
    model, tok = load_for_inference(args.checkpoint)
    if isinstance(model, GPTClassifier):
        sys.exit(f"error: {args.checkpoint} holds a classifier; only a language model is exported")
    kind = export_folder(merge_lora(model), tok, args.out)   # LoRA adapters, if any, folded into the weights
    print(f"wrote a Hugging Face {kind} folder to {args.out}: transformers' AutoModelForCausalLM and "
          "GPT.from_pretrained open it")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m gpt", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="generate text from a checkpoint, printed as it comes")
    s.add_argument("--checkpoint", required=True,
                   help="a checkpoint folder (config.json, model.safetensors, tokenizer.json) "
                        "or a Hugging Face folder: GPT-2 (with vocab.json and merges.txt, or tokenizer.json), "
                        "Llama, Qwen2 or Qwen3 (with tokenizer.json)")
    s.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    s.add_argument("--max-new-tokens", type=int, default=200)
    s.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--stop-at-eos", action=argparse.BooleanOptionalAction, default=True,
                   help="stop at <|endoftext|> (default: yes)")
    s.set_defaults(func=sample)

    c = sub.add_parser("classify", help="print the label and its probability for each text")
    c.add_argument("--checkpoint", required=True, help="the output folder of a classification fine-tune")
    c.add_argument("text", nargs="*", help="texts to classify (default: one per line from stdin)")
    c.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    c.set_defaults(func=classify)

    ch = sub.add_parser("chat", help="answer instructions typed at the prompt, one per line (Ctrl-D ends)")
    ch.add_argument("--checkpoint", required=True, help="the output folder of an instruction fine-tune")
    ch.add_argument("--input", default="", help="an input passed along with every instruction (Alpaca's 'input')")
    ch.add_argument("--max-new-tokens", type=int, default=256)
    ch.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the default)")
    ch.add_argument("--seed", type=int, default=None)
    ch.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ch.set_defaults(func=chat)

    e = sub.add_parser("export", help="write a model as a Hugging Face folder (config.json, model.safetensors, "
                                      "tokenizer.json)")
    e.add_argument("--checkpoint", required=True, help="a training output folder, a checkpoint, an instruction "
                                                       "fine-tune (LoRA adapters are merged) or a Hugging Face folder")
    e.add_argument("--out", required=True, help="the folder to write; it must not hold a model already")
    e.set_defaults(func=export)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
