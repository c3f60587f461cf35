"""python -m gpt eval: measure a model on local files, offline, with no judge model.

    python -m gpt eval --checkpoint DIR --data FILE          perplexity and bits per byte (sliding windows)
    python -m gpt eval --checkpoint DIR --val                the whole val split of the run that trained DIR
    python -m gpt eval --checkpoint DIR --choices FILE.jsonl zero-shot multiple choice (HellaSwag's format)
    python -m gpt eval --checkpoint DIR --instruct FILE.json reference NLL, ROUGE-L and exact match (Alpaca's format)

DIR is anything `sample` takes. The scoring itself is in gpt/evaluate.py; this
module reads the files, encodes them as the model's tokenizer does, and prints.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from bpe import Tokenizer
from bpe.gguf import metadata, open_gguf, special_ids
from gpt import GPT
from gpt.evaluate import TextScore, byte_lengths, choice_nll, score_tokens, sliding_windows, token_nll
from gpt.files import read_json_object
from gpt.pretrained import CONFIG_FILE, TOKENIZER_FILE, hf_model_type, is_gguf, read_config
from tinytensor.functional import IGNORE_INDEX

from .checkpoint import CKPT_DIR, STATE_FILE, resolve_checkpoint
from .settings import CHECKPOINT, DEVICE, ERRORS
from .data import EOT, read_text
from .prepare import open_prepared
from .prepare.sources import SourceStats, documents
from .data import pad_id
from .flags import Settings, add_command, at_least, non_negative, setting
from .inference import load_for_inference
from .instruct import (ALPACA, PromptTemplate, _parse_json, collate, encode_example, generate_response,
                       read_instructions)


# ---- what the model's folder says about encoding ------------------------------------
def bos_id(folder: Path, tok: Tokenizer) -> int | None:
    """The id the model's tokenizer puts before every text, or None: the first special
    token of tokenizer.json's TemplateProcessing (Llama 3), else tokenizer_config.json's
    bos_token when its add_bos_token is true; in a GGUF file, tokenizer.ggml.bos_token_id
    when tokenizer.ggml.add_bos_token is true. Our folders and GPT-2's add none."""
    if is_gguf(folder):
        return _gguf_bos_id(folder, tok)
    if hf_model_type(read_config(folder)) is None:
        return None
    name = None
    if (folder / TOKENIZER_FILE).is_file():
        post = read_json_object(folder / TOKENIZER_FILE).get("post_processor")
        steps = (post.get("processors") or [post]) if isinstance(post, dict) else []
        for step in steps:
            single = step.get("single") if isinstance(step, dict) and step.get("type") == "TemplateProcessing" else None
            if isinstance(single, list) and single and isinstance(single[0], dict) and "SpecialToken" in single[0]:
                name = (single[0]["SpecialToken"] or {}).get("id")
    if name is None and (folder / "tokenizer_config.json").is_file():
        config = read_json_object(folder / "tokenizer_config.json")
        bos = config.get("bos_token")
        if config.get("add_bos_token") is True and bos is not None:
            name = bos.get("content") if isinstance(bos, dict) else bos
    if name is None:
        return None
    if not isinstance(name, str) or name not in tok.special_tokens:
        raise ValueError(f"{folder}: the tokenizer adds {name!r} before a text, but has no such special token")
    return tok.special_tokens[name]


def _gguf_bos_id(path: Path, tok: Tokenizer) -> int | None:
    reader = open_gguf(path)
    if not metadata(reader, "tokenizer.ggml.add_bos_token", bool, False):
        return None
    bos = special_ids(reader).get("bos")
    if bos is None or not 0 <= bos < tok.vocab_size:
        raise ValueError(f"{path}: tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is "
                         f"{bos!r}, not an id of its {tok.vocab_size} tokens")
    return bos


def encode_documents(tok: Tokenizer, docs: list[str], bos: int | None) -> list[int]:
    """The documents as training encodes them (specials in the text stay text), joined with
    <|endoftext|>, after the BOS when the tokenizer adds one."""
    if len(docs) > 1 and EOT not in tok.special_tokens:
        raise ValueError(f"the tokenizer has no {EOT} to join {len(docs)} documents: give one text file")
    ids = [] if bos is None else [bos]
    for n, doc in enumerate(tok.encode_batch(docs, allowed_special="none")):
        ids += ([tok.special_tokens[EOT]] if n else []) + doc
    return ids


def prepared_val(folder: Path, tok: Tokenizer) -> np.ndarray:
    """The val split of a prepared folder (python -m gpt prepare, or a run's OUT/data/<key>), its
    shards verified, checked to be tokenized by `tok`."""
    prepared = open_prepared(folder, fix="prepare the data again")
    theirs = prepared.tokenizer
    if theirs.mergeable_ranks() != tok.mergeable_ranks() or theirs.special_tokens != tok.special_tokens:
        raise ValueError(f"{folder} was tokenized with another tokenizer than the model's: give the model's own data")
    return np.asarray(prepared.val[:], dtype=np.int64)


def run_data_folder(checkpoint: Path) -> Path:
    """The prepared data of the pretraining run that wrote `checkpoint` (one of its checkpoints):
    OUT/data/<the data key in its state.json>."""
    if not (checkpoint / STATE_FILE).is_file() or checkpoint.parent.name != CKPT_DIR:
        raise ValueError(f"--val needs a pretraining run of ours (its --out folder or a checkpoint in it); "
                         f"{checkpoint} is not one: give the text with --data instead")
    key = read_json_object(checkpoint / STATE_FILE).get("data_key")
    train = read_config(checkpoint).get("train") or {}
    if not isinstance(key, str):
        raise ValueError(f"{checkpoint / STATE_FILE}: data_key must be a string, got {key!r}")
    if train.get("cache_dir"):
        raise ValueError(f"that run kept its data in --cache-dir {train['cache_dir']}: "
                         f"pass --data with its prepared folder there (the one whose meta.json has key {key}) instead of --val")
    # the data key hashes the tokens themselves: look for it in the run's cache and in a prepared --data
    given = train.get("data")
    candidates = sorted((checkpoint.parents[1] / "data").glob("*/meta.json"))
    if isinstance(given, str) and (Path(given) / "meta.json").is_file():
        candidates.append(Path(given) / "meta.json")
    for meta in candidates:
        if read_json_object(meta).get("key") == key:
            return meta.parent
    raise FileNotFoundError(f"the run's prepared data (data key {key}) is gone from {checkpoint.parents[1] / 'data'}: "
                            "give the text with --data")


# ---- the three evaluations -------------------------------------------------------------
def perplexity_eval(model: GPT, tok: Tokenizer, ids: list[int] | np.ndarray, context: int | None, stride: int | None,
                    batch_size: int) -> tuple[TextScore, int, int]:
    """(score, context, stride): the defaults are the block size and half of it."""
    context = context or model.config.block_size
    stride = stride or max(1, context // 2)
    windows = len(sliding_windows(len(ids), context, stride)) if len(ids) >= 2 else 0
    with tqdm(total=windows, desc="eval", unit="window", disable=None) as bar:
        score = score_tokens(model, ids, context, stride, byte_lengths(tok, model.config.vocab_size),
                             batch_size, on_batch=bar.update)
    return score, context, stride


def read_choices(path: Path) -> list[tuple[str, list[str], int]]:
    """(context, endings, label) per line of a HellaSwag-format .jsonl: "ctx" (or, in the
    original file's fields, "ctx_a" + " " + "ctx_b"), "endings" (a list of strings) and "label"."""
    if not path.is_file():
        raise FileNotFoundError(f"no multiple-choice file at {path}")
    items = []
    for n, line in enumerate(read_text(path, hint=None).splitlines(), 1):
        if not line.strip():
            continue
        row = _parse_json(line, path, n)
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {n}: expected a JSON object")
        ctx = row.get("ctx")
        if ctx is None and isinstance(row.get("ctx_a"), str):
            ctx = (row["ctx_a"] + " " + str(row.get("ctx_b") or "")).strip()
        endings, label = row.get("endings"), row.get("label")
        if not isinstance(ctx, str):
            raise ValueError(f"{path}, line {n}: needs a string 'ctx' (or 'ctx_a' and 'ctx_b')")
        if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) and e for e in endings):
            raise ValueError(f"{path}, line {n}: 'endings' must be a list of at least 2 non-empty strings")
        if isinstance(label, str) and label.isdigit():
            label = int(label)                     # the original HellaSwag files store some labels as strings
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(endings):
            raise ValueError(f"{path}, line {n}: 'label' must be an index into 'endings' (0..{len(endings) - 1})")
        items.append((ctx, endings, label))
    if not items:
        raise ValueError(f"{path} holds no items")
    return items


def choices_eval(model: GPT, tok: Tokenizer, items: list[tuple[str, list[str], int]], bos: int | None) -> dict:
    """acc: the ending with the lowest summed NLL is the label; acc_norm: the lowest mean
    NLL per ending token. Each ending is " " + ending encoded and appended to the encoded context."""
    correct = correct_norm = 0
    for ctx, endings, label in tqdm(items, desc="eval", unit="item", disable=None):
        context = ([] if bos is None else [bos]) + tok.encode(ctx)
        scores = choice_nll(model, context, [tok.encode(" " + e) for e in endings])
        correct += int(np.argmin([s for s, _ in scores]) == label)
        correct_norm += int(np.argmin([s / n for s, n in scores]) == label)
    return {"n": len(items), "acc": correct / len(items), "acc_norm": correct_norm / len(items)}


def rouge_l(reference: str, answer: str) -> float:
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise ImportError("ROUGE-L needs the rouge-score package: pip install 'tinygpt[eval]' "
                          "(or pass --max-new-tokens 0 for the reference NLL alone)") from None
    return rouge_scorer.RougeScorer(["rougeL"]).score(reference, answer)["rougeL"].fmeasure


def response_nll(model: GPT, tok: Tokenizer, template: PromptTemplate, entries: list[dict[str, str]],
                 batch_size: int) -> tuple[float, int]:
    """(summed NLL, tokens) of each reference output and its <|endoftext|> after its prompt:
    the prompt masked exactly as --mask-prompt masks it in training."""
    encoded = [encode_example(tok, template, e) for e in entries]
    nats, count = 0.0, 0
    for i in range(0, len(encoded), batch_size):
        inputs, targets, _ = collate(encoded[i:i + batch_size], pad_id(tok), mask_prompt=True,
                                     max_length=model.config.block_size)
        nats += float(token_nll(model, inputs, targets).sum())
        count += int((targets != IGNORE_INDEX).sum())
    return nats, count


def instruct_eval(model: GPT, tok: Tokenizer, template: PromptTemplate, entries: list[dict[str, str]],
                  max_new_tokens: int, batch_size: int) -> dict:
    nats, count = response_nll(model, tok, template, entries, batch_size)
    if not count:
        raise ValueError(f"no reference output fits: the prompts fill the model's {model.config.block_size} tokens")
    result: dict[str, Any] = {"n": len(entries), "tokens": count, "nll": nats / count,
                              "perplexity": math.exp(min(nats / count, 709.0))}
    if max_new_tokens:
        rouge = exact = 0.0
        for e in tqdm(entries, desc="answers", unit="answer", disable=None):
            answer = generate_response(model, tok, template, e["instruction"], e["input"], max_new_tokens)
            rouge += rouge_l(e["output"], answer)
            exact += float(answer.strip() == e["output"].strip())
        result.update(rougeL_f1=rouge / len(entries), exact_match=exact / len(entries))
    return result


# ---- the command ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSettings(Settings):
    """Measure a model on local files: perplexity and bits per byte of a text (--data, --val),
    zero-shot multiple choice (--choices), or answers to instructions (--instruct)."""
    checkpoint: str | None = CHECKPOINT(None)
    # what to score: exactly one of
    data: str | None = setting(None, "a text file, a folder of .txt files or a .jsonl with 'text' (documents are "
                               "joined with <|endoftext|>), or a folder prepare_data wrote (its val split)",
                               one_of="what")
    val: bool = setting(False, "the whole val split of the run that trained --checkpoint", one_of="what")
    choices: str | None = setting(None, "multiple choice: a HellaSwag-format .jsonl (ctx, endings, label)",
                                  one_of="what")
    instruct: str | None = setting(None, "an Alpaca-format JSON or JSONL (instruction, input, output)",
                                   one_of="what")
    context: int | None = setting(None, "tokens per window", check=at_least(1), default_text="the block size")
    stride: int | None = setting(None, "tokens between window starts; each scored token sees at least "
                                 "context - stride before it", check=at_least(1),
                                 default_text="half the context; = context: disjoint")
    batch_size: int = setting(8, "windows (or examples) per forward", check=at_least(1))
    limit: int | None = setting(None, "only the first N items or examples", check=at_least(1), default_text="all")
    # not the sampling flags' --max-new-tokens: 0 here skips the answers
    max_new_tokens: int = setting(256, "--instruct: tokens per greedy answer; 0 skips the answers (reference NLL "
                                  "only)", check=non_negative)
    prompt_template: str | None = setting(None, "--instruct: a JSON file {with_input, without_input}",
                                          default_text="the fine-tune's own, else Alpaca's")
    errors: str = ERRORS("strict")
    json: bool = setting(False, "print the results as one JSON line last")
    device: str = DEVICE("cpu")


def evaluate(args: EvalSettings) -> None:
    quiet: Callable[[str], None] = lambda text: None   # noqa: E731
    if args.max_new_tokens and args.instruct:
        try:
            rouge_l("a", "a")                           # a missing rouge-score is an error now, not after the NLL
        except ImportError as e:
            sys.exit(f"error: {e}")
    folder = resolve_checkpoint(args.checkpoint, say=quiet) if Path(args.checkpoint).is_dir() else Path(args.checkpoint)
    model, tok = load_for_inference(args.checkpoint, device=args.device)
    if not isinstance(model, GPT):
        sys.exit(f"error: {args.checkpoint} holds a classifier; eval scores language models")
    bos = bos_id(folder, tok)
    if args.choices:
        result = choices_eval(model, tok, read_choices(Path(args.choices))[:args.limit], bos)
        print(f"{result['n']} items: acc {result['acc']:.4f}, acc_norm {result['acc_norm']:.4f}")
    elif args.instruct:
        config = read_config(folder) if (folder / CONFIG_FILE).is_file() else {}
        template = (PromptTemplate.from_file(args.prompt_template) if args.prompt_template
                    else PromptTemplate.from_dict(config["prompt_template"]) if config.get("task") == "instruct"
                    else ALPACA)
        entries = read_instructions(args.instruct)[:args.limit]
        result = instruct_eval(model, tok, template, entries, args.max_new_tokens, args.batch_size)
        line = f"{result['n']} examples: reference NLL {result['nll']:.4f} nats/token over {result['tokens']:,} tokens"
        if "rougeL_f1" in result:
            line += f", ROUGE-L F1 {result['rougeL_f1']:.4f}, exact match {result['exact_match']:.4f}"
        print(line)
    else:
        if args.val:
            ids = prepared_val(run_data_folder(folder), tok)
        elif (Path(args.data) / "meta.json").is_file():
            ids = prepared_val(Path(args.data), tok)
        else:
            texts = [d.text for d in documents([args.data], SourceStats(), errors=args.errors)]
            ids = encode_documents(tok, texts, bos)
        score, context, stride = perplexity_eval(model, tok, ids, args.context, args.stride, args.batch_size)
        result = score.to_dict()
        print(f"{score.tokens:,} tokens scored (context {context}, stride {stride}): "
              f"{score.nats_per_token:.4f} nats/token, perplexity {score.perplexity:.3f}, "
              f"{score.bits_per_byte:.4f} bits per byte ({score.bytes:,} bytes)")
    if args.json:
        print(json.dumps(result))


def add_parser(sub: Any) -> None:
    """Register `eval` on the subcommand parsers of python -m gpt."""
    add_command(sub, "eval", EvalSettings, evaluate, "perplexity and bits per byte of a text, multiple-choice "
                                                      "accuracy, or instruction answers scored against references")
