"""python -m gpt harness: any model we load, through EleutherAI's lm-evaluation-harness.

    python -m gpt harness --checkpoint DIR --tasks hellaswag_local --include-path docs/harness

lm-eval asks a model three things, and each is one of our scorers:

    loglikelihood(context, continuation)  ->  (log p(continuation | context), is it the greedy one)
    loglikelihood_rolling(text)           ->  log p(text), in eval's sliding windows (gpt/evaluate.py)
    generate_until(context, until)        ->  the greedy continuation, cut at the first stop string

`Scorer` answers them for plain tuples, so it needs no lm-eval (and is tested without it);
`harness_model` wraps it in lm-eval's model class, registered as "tinygpt". lm-eval is
an optional extra: pip install 'tinygpt[eval]' (it needs no torch).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

import tinytensor as tt
import tinytensor.functional as F
from bpe import Tokenizer
from gpt import GPT
from gpt.evaluate import HEAD_ELEMENTS, byte_lengths, score_tokens
from tinytensor.backend import to_device

from .checkpoint import resolve_checkpoint
from .data import EOT
from .evaluate import bos_id
from .flags import Settings, add_command, at_least, setting
from .inference import load_for_inference
from .settings import CHECKPOINT, DEVICE

EXTRA = "pip install 'tinygpt[eval]'"


class Scorer:
    """lm-eval's three questions, answered by `model` (in eval mode) and its tokenizer.
    `bos`: the id the tokenizer puts before every text, if it adds one (Llama 3). An empty
    context, and a whole text, start after it, else after <|endoftext|> (what GPT-2 sees
    between documents), as lm-eval's Hugging Face models do."""

    def __init__(self, model: GPT, tok: Tokenizer, bos: int | None, batch_size: int = 8):
        self.model, self.tok, self.batch_size = model, tok, batch_size
        self.bos = [bos] if bos is not None else []
        self.prefix = bos if bos is not None else tok.special_tokens.get(EOT)
        self.block = model.config.block_size

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, disallowed_special=())       # a benchmark's text is text, specials included

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) as lm-eval's own models encode them: spaces that end
        the context go with the continuation, and the continuation's ids are those of the whole
        text after the context's, so a word is tokenized as it would be in running text."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if not context:
            if self.prefix is None:
                raise ValueError("an empty context needs a token to start after: the tokenizer has no BOS "
                                 "and no <|endoftext|>")
            head, whole = [self.prefix], [self.prefix] + self.encode(continuation)
        else:
            head, whole = self.bos + self.encode(context), self.bos + self.encode(context + continuation)
            if whole[:len(head)] != head:     # the join merged across the boundary: encode the parts apart
                whole = head + self.encode(continuation)
        if len(whole) == len(head):
            raise ValueError(f"the continuation {continuation!r} encodes to no tokens")
        return head, whole[len(head):]

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(summed log-probability of each continuation's tokens, whether each was the argmax)."""
        rows = [self._pair(c, x) for c, x in pairs]
        out: list[tuple[float, bool]] = []
        for start in range(0, len(rows), self.batch_size):
            out += self._score_rows(rows[start:start + self.batch_size])
        return out

    def _score_rows(self, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """One padded batch: row b is context + continuation, cut from the left to block_size + 1
        tokens; the last len(continuation) predictions are scored."""
        seqs = [(head + cont)[-(self.block + 1):] for head, cont in rows]
        T = max(len(s) for s in seqs) - 1
        inputs = np.zeros((len(seqs), T), dtype=np.int64)              # right padding: causal, never seen
        where, wanted = [], []
        for b, (seq, (_, cont)) in enumerate(zip(seqs, rows)):
            n = len(seq) - 1
            inputs[b, :n] = seq[:-1]
            scored = min(len(cont), n)
            where += [b * T + t for t in range(n - scored, n)]
            wanted += seq[n - scored + 1:]
        where_a, wanted_a = np.array(where), np.array(wanted)
        logp = np.empty(len(where))
        greedy = np.empty(len(where), dtype=bool)
        with tt.no_grad():
            h = self.model.hidden_states(inputs)                       # (B, T, C)
            hidden = h.data.reshape(-1, h.shape[-1])[to_device(where_a, h.device)]   # (K, C)
            step = max(1, HEAD_ELEMENTS // self.model.config.vocab_size)
            for i in range(0, len(where), step):
                lp = to_device(F.log_softmax(self.model.logits(tt.tensor(hidden[i:i + step]))).data, "cpu")
                logp[i:i + step] = lp[np.arange(len(lp)), wanted_a[i:i + step]]
                greedy[i:i + step] = lp.argmax(axis=-1) == wanted_a[i:i + step]
        out, k = [], 0
        for seq, (_, cont) in zip(seqs, rows):
            scored = min(len(cont), len(seq) - 1)
            out.append((float(logp[k:k + scored].sum()), bool(greedy[k:k + scored].all())))
            k += scored
        return out

    def loglikelihood_rolling(self, texts: Iterable[str]) -> list[float]:
        """log p(text), every token scored once after the prefix, in sliding windows of the
        block size, half a block apart (python -m gpt eval's defaults)."""
        if self.prefix is None:
            raise ValueError("scoring a whole text needs a token to start after: the tokenizer has no BOS "
                             "and no <|endoftext|>")
        lengths = byte_lengths(self.tok, self.model.config.vocab_size)
        out = []
        for text in texts:
            ids = [self.prefix] + self.encode(text)
            if len(ids) < 2:
                out.append(0.0)
                continue
            score = score_tokens(self.model, ids, self.block, max(1, self.block // 2), lengths, self.batch_size)
            out.append(-score.nats)
        return out

    def generate_until(self, requests: Sequence[tuple[str, dict]]) -> list[str]:
        """Greedy (or sampled, with gen_kwargs' temperature) text after each context, up to
        max_gen_toks tokens, cut before the first of `until` to appear."""
        eos = self.tok.special_tokens.get(EOT)
        out = []
        for context, kwargs in requests:
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            ids = (self.bos + self.encode(context)) if context else [self.prefix]
            text, data = "", b""
            for nxt in self.model.stream([ids[-self.block:]], int(kwargs.get("max_gen_toks", 256)), temperature,
                                         eos_id=eos, seed=0):
                if eos is not None and int(nxt[0]) == eos:
                    break
                data += self.tok.decode_bytes([int(nxt[0])])
                text = data.decode("utf-8", errors="replace")
                if any(stop in text for stop in until):
                    break
            cut = min((text.index(stop) for stop in until if stop in text), default=len(text))
            out.append(text[:cut])
        return out


def _lm_eval() -> tuple[Any, Any]:
    """lm-eval's model base class and its register_model, or one error naming the extra."""
    try:
        from lm_eval.api.model import LM
        from lm_eval.api.registry import register_model
    except ImportError:
        raise ImportError(f"python -m gpt harness needs lm-eval (lm-evaluation-harness): {EXTRA}") from None
    return LM, register_model


def harness_model(scorer: Scorer) -> Any:
    """`scorer` as an instance of lm-eval's LM, registered with it as "tinygpt"."""
    LM, register_model = _lm_eval()

    @register_model("tinygpt")
    class TinyGPT(LM):
        def __init__(self) -> None:
            super().__init__()
            self.scorer = scorer

        def loglikelihood(self, requests: list) -> list[tuple[float, bool]]:
            return self.scorer.loglikelihood([r.args for r in requests])

        def loglikelihood_rolling(self, requests: list) -> list[float]:
            return self.scorer.loglikelihood_rolling([r.args[0] for r in requests])

        def generate_until(self, requests: list) -> list[str]:
            return self.scorer.generate_until([r.args for r in requests])

    return TinyGPT()


# ---- the command ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HarnessSettings(Settings):
    """Run lm-evaluation-harness tasks on a model we load (needs lm-eval: pip install 'tinygpt[eval]').
    Tasks may be lm-eval's own (their datasets are downloaded) or defined in YAML files under
    --include-path, reading local files (docs/harness/ has one)."""
    checkpoint: str | None = CHECKPOINT(None)
    tasks: tuple[str, ...] = setting((), "lm-eval task names, comma-separated", required=True)
    include_path: str | None = setting(None, "a folder of task YAML files to add to lm-eval's")
    limit: int | None = setting(None, "only the first N examples of each task", check=at_least(1),
                                default_text="all")
    num_fewshot: int | None = setting(None, "examples shown before each question", check=at_least(0),
                                      default_text="each task's own")
    batch_size: int = setting(8, "requests per forward", check=at_least(1))
    output: str | None = setting(None, "also write lm-eval's results to this JSON file")
    device: str = DEVICE("cpu")


def harness(args: HarnessSettings) -> None:
    _lm_eval()                                          # before the model is loaded
    model = harness_model(Scorer(*_load(args.checkpoint, args.device), batch_size=args.batch_size))
    from lm_eval import evaluator
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    manager = TaskManager(include_path=args.include_path) if args.include_path else TaskManager()
    results = evaluator.simple_evaluate(model=model, tasks=list(args.tasks), num_fewshot=args.num_fewshot,
                                        limit=args.limit, task_manager=manager, log_samples=False)
    if results is None:
        sys.exit("error: lm-eval returned no results")
    print(make_table(results))
    if args.output:
        Path(args.output).write_text(json.dumps({"results": results["results"]}, indent=2, default=str) + "\n")


def _load(checkpoint: str, device: str) -> tuple[GPT, Tokenizer, int | None]:
    model, tok = load_for_inference(checkpoint, device=device)
    if not isinstance(model, GPT):
        raise ValueError(f"{checkpoint} holds a classifier; the harness scores language models")
    folder = resolve_checkpoint(checkpoint, lambda _: None) if Path(checkpoint).is_dir() else Path(checkpoint)
    return model, tok, bos_id(folder, tok)


def add_parser(sub: Any) -> None:
    """python -m gpt harness, in the command line of gpt/train/cli.py."""
    add_command(sub, "harness", HarnessSettings, harness,
                "run lm-evaluation-harness tasks on a model (needs lm-eval: pip install 'tinygpt[eval]')")

