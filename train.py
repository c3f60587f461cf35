"""Pretrain a GPT from scratch, with checkpoints that resume bit for bit.

    python train.py                          # a small GPT on CPython's own reference docs, offline, minutes on a CPU
    python train.py --data input.txt --tokenizer bytes --preset nano --max-iters 2000
    python train.py --resume --max-iters 1000   # continue the latest checkpoint in --out
    python -m gpt sample --checkpoint out       # sample from it

    python train.py --task classify --init-from out --data spam.tsv --balance   # fine-tune (see below)
    python train.py --task instruct --init-from gpt2/ --data instruction-data.json --mask-prompt

The pipeline: documents -> tokenizer -> train.bin / val.bin (cached under
--cache-dir) -> random windows of block_size + 1 tokens -> AdamW with warmup +
cosine decay, gradient accumulation and clipping. Every --eval-interval steps:
mean train/val loss on fixed batches, val perplexity and a sample. Everything a
run writes lands in --out:

    run.json          the fully resolved settings of the latest run
    metrics.jsonl     one JSON line per step (loss, lr, tokens/s, MFU) and per evaluation
    loss.png          with --plot (needs matplotlib)
    ckpt/step_N/      checkpoints (see gpt/checkpoint.py); the newest two are kept
    data/             the tokenized corpus, unless --cache-dir says elsewhere

--task classify | instruct fine-tunes a pretrained model (one of our runs or
checkpoints, or a Hugging Face GPT-2 folder) instead; its own flags are listed
by `python train.py --task classify --help` (the loops live in gpt/finetune.py).

Bit-identical resume holds because every source of randomness has its own
saved state: the training batch sampler's generator, tinytensor's generator
(dropout), and the optimizer's moments and step counts. Evaluation and samples
draw from generators seeded afresh each time, so they never disturb training.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import tinytensor as tt
from gpt import GPT, GPTConfig, PRESETS
from gpt.checkpoint import Checkpoint, latest_checkpoint, save_checkpoint, write_json
from gpt.data import EOT, TOKENIZERS, BatchSampler, PreparedData, prepare_data, unigram_loss
from tinytensor import optim
from tinytensor.backend import get_array_module, to_device
from tinytensor.random import get_rng_state, set_rng_state

TASKS = ("pretrain", "classify", "instruct")
MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias")


@dataclass
class TrainConfig:
    """Every setting of a run. The defaults are the no-argument run: BPE on
    CPython's reference docs and a nano-sized GPT, a few minutes on 2 CPU cores."""
    # data
    data: str | None = None              # text file, folder of .txt, .jsonl; None: pydoc_data.topics
    errors: str = "strict"               # undecodable UTF-8: "strict" (error) or "replace"
    tokenizer: str = "bpe"               # bpe | bytes | gpt2 | path of a saved tokenizer
    vocab_size: int = 1024               # for --tokenizer bpe, <|endoftext|> included
    gpt2_vocab: str | None = None        # folder with GPT-2's encoder.json + vocab.bpe
    val_fraction: float = 0.1
    cache_dir: str | None = None         # None: OUT/data
    # model: a preset, then these override it (None keeps the preset's value)
    preset: str = "nano"
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    block_size: int | None = None
    dropout: float = 0.0
    bias: bool = True                    # biases in linear layers and norms (GPT-2 has them, nanoGPT's default not)
    # optimisation
    batch_size: int = 32
    grad_accum: int = 1                  # micro-batches per step; the step sees batch_size * grad_accum rows
    max_iters: int = 500
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_iters: int = 50
    lr_decay_iters: int | None = None    # None: max_iters
    weight_decay: float = 0.1
    beta2: float = 0.99
    grad_clip: float = 1.0               # 0: no clipping
    # evaluation, checkpoints, logging
    eval_interval: int = 100
    eval_iters: int = 20
    sample_tokens: int = 120
    checkpoint_interval: int = 200
    out: str = "out"
    resume: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 1337
    plot: bool = False
    peak_flops: float | None = None      # FLOP/s for MFU; None: measured with a matmul at start

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "eval_interval", "eval_iters", "checkpoint_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        decay = self.max_iters if self.lr_decay_iters is None else self.lr_decay_iters
        if not 0 <= self.warmup_iters <= decay:
            raise ValueError(f"--warmup-iters ({self.warmup_iters}) must be between 0 and --lr-decay-iters "
                             f"(which is {decay}; it defaults to --max-iters): lower it for a short run")


# settings a resumed run may change; any other flag must match the checkpoint
CHANGEABLE_ON_RESUME = {"max_iters", "eval_interval", "eval_iters", "sample_tokens", "checkpoint_interval",
                        "out", "resume", "device", "plot", "peak_flops", "cache_dir"}


class Diverged(RuntimeError):
    """The loss or the gradient turned NaN or infinite."""


# ---- command line ----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = ap

    def add(flag: str, help: str = "", **kw: Any) -> None:
        name = flag[2:].replace("-", "_")
        # default None everywhere: a flag left out is told apart from one given with the
        # default value, which matters on --resume (only given flags are checked)
        group.add_argument(flag, default=None, help=f"{help} (default: {getattr(d, name)})", **kw)

    ap.add_argument("--task", choices=TASKS, default="pretrain",
                    help="pretrain from text (default), or fine-tune: see --task classify --help")
    group = ap.add_argument_group("data")
    add("--data", "a text file, a folder of .txt files (one document each) or a .jsonl with a 'text' field; "
        "none: CPython's reference docs (pydoc_data.topics)")
    add("--errors", "undecodable UTF-8 in the data", choices=["strict", "replace"])
    add("--tokenizer", f"one of {', '.join(TOKENIZERS)}, or a saved tokenizer file")
    add("--vocab-size", "vocabulary of a trained --tokenizer bpe, <|endoftext|> included", type=int)
    add("--gpt2-vocab", "folder with GPT-2's encoder.json and vocab.bpe, for --tokenizer gpt2")
    add("--val-fraction", "share of the tokens held out for validation, split between documents", type=float)
    add("--cache-dir", "where tokenized data is kept (None: OUT/data)")
    group = ap.add_argument_group("model")
    add("--preset", "model size", choices=list(PRESETS))
    for name in ("n-layer", "n-head", "n-embd", "block-size"):
        add(f"--{name}", "overrides the preset", type=int)
    add("--dropout", type=float)
    add("--bias", "biases in the linear layers and norms", action=argparse.BooleanOptionalAction)
    group = ap.add_argument_group("optimisation")
    add("--batch-size", "sequences per micro-batch", type=int)
    add("--grad-accum", "micro-batches per optimizer step", type=int)
    add("--max-iters", "optimizer steps", type=int)
    add("--lr", "peak learning rate", type=float)
    add("--min-lr", "learning rate at the end of the cosine decay", type=float)
    add("--warmup-iters", "steps of linear warmup", type=int)
    add("--lr-decay-iters", "step where the cosine reaches --min-lr (None: --max-iters)", type=int)
    add("--weight-decay", "AdamW decay of the matrices (biases and norms get none)", type=float)
    add("--beta2", "AdamW beta2", type=float)
    add("--grad-clip", "clip the global gradient norm to this; 0 turns clipping off", type=float)
    group = ap.add_argument_group("run")
    add("--eval-interval", "steps between evaluations", type=int)
    add("--eval-iters", "batches per split in an evaluation", type=int)
    add("--sample-tokens", "tokens generated at each evaluation; 0 for none", type=int)
    add("--checkpoint-interval", "steps between checkpoints (also written at the end and on Ctrl-C)", type=int)
    add("--out", "output folder")
    add("--resume", "continue from the latest checkpoint in --out", action="store_true")
    add("--device", choices=["cpu", "cuda"])
    add("--dtype", choices=["float32", "float64"])
    add("--seed", type=int)
    add("--plot", "write loss.png (needs matplotlib)", action="store_true")
    add("--peak-flops", "the device's FLOP/s for MFU (None: measured at start)", type=float)
    return ap


def given_flags(argv: list[str] | None) -> dict[str, Any]:
    """The settings given on the command line, as TrainConfig field -> value."""
    flags = vars(build_parser().parse_args(argv))
    flags.pop("task")
    return {k: v for k, v in flags.items() if v is not None}


def resolve_config(given: dict[str, Any]) -> tuple[TrainConfig, Checkpoint | None]:
    """The run's settings: the flags over the defaults for a new run; with
    --resume, the checkpoint's settings with the changeable flags applied."""
    out = Path(given.get("out", TrainConfig.out))
    latest = latest_checkpoint(out)
    if not given.get("resume"):
        if latest is not None:
            raise ValueError(
                f"{out} already holds a checkpoint ({latest.name}): pass --resume to continue it, "
                f"or choose another --out (or delete {out / 'ckpt'}) to start afresh"
            )
        return TrainConfig(**given), None
    if latest is None:
        raise FileNotFoundError(f"--resume: there is no checkpoint in {out / 'ckpt'} to continue from")
    ckpt = Checkpoint.read(latest)
    saved = TrainConfig(**ckpt.config["train"])
    differences = [
        f"--{k.replace('_', '-')}: the checkpoint has {getattr(saved, k)!r}, the command line {v!r}"
        for k, v in given.items() if k not in CHANGEABLE_ON_RESUME and getattr(saved, k) != v
    ]
    if differences:
        raise ValueError(
            f"the checkpoint {latest} was trained with other settings:\n  " + "\n  ".join(differences)
            + "\ndrop these flags to continue it as it was, or start a new run with another --out"
        )
    changes = {k: v for k, v in given.items() if k in CHANGEABLE_ON_RESUME}
    return TrainConfig(**{**asdict(saved), **changes}), ckpt


def model_config(cfg: TrainConfig, vocab_size: int) -> GPTConfig:
    overrides = {k: getattr(cfg, k) for k in MODEL_FIELDS if getattr(cfg, k) is not None}
    return GPTConfig.preset(cfg.preset, vocab_size=vocab_size, **overrides)


# ---- pieces of the loop --------------------------------------------------------

def evaluate(model: GPT, data: PreparedData, cfg: TrainConfig, block_size: int) -> dict[str, float]:
    """Mean loss over `eval_iters` batches of each split. The batches come from
    generators seeded the same way every time: each evaluation sees the same
    windows (so the curve shows the model changing, not the batches), and the
    training sampler's stream is never touched."""
    model.eval()
    losses = {}
    with tt.no_grad():
        for i, (split, tokens) in enumerate((("train", data.train), ("val", data.val))):
            sampler = BatchSampler(tokens, block_size, cfg.batch_size, seed=[cfg.seed, 100 + i], name=split)
            losses[split] = float(np.mean([model(*sampler.sample())[1].item() for _ in range(cfg.eval_iters)]))
    model.train()
    return losses


def sample_text(model: GPT, data: PreparedData, n_tokens: int, seed: int) -> str:
    """A short continuation, seeded so it does not consume tinytensor's stream:
    from <|endoftext|> (a document start) when the corpus has several documents,
    else from the corpus's first token."""
    eot = data.tokenizer.special_tokens.get(EOT)
    prompt = [eot] if data.meta["documents"] > 1 and eot is not None else [int(data.train[0])]
    ids = model.generate([prompt], n_tokens, temperature=0.8, top_k=50, seed=seed)[0]
    return data.tokenizer.decode(ids[1:].tolist() if prompt == [eot] else ids.tolist())


def measure_peak_flops(device: str, dtype: str) -> float:
    """FLOP/s of a large matmul on this device: the ceiling MFU is measured against
    (a CPU has no datasheet number the way a GPU does)."""
    n = 4096 if device == "cuda" else 1024
    # a generator of its own: drawing from tinytensor's would break bit-identical resume
    a = to_device(np.random.default_rng(0).standard_normal((n, n)).astype(dtype), device)
    xp = get_array_module(a)
    sync = xp.cuda.Device().synchronize if device == "cuda" else (lambda: None)
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        a @ a
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def plot_losses(metrics: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    steps = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "val_loss" in m]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([m["step"] for m in steps], [m["loss"] for m in steps], lw=0.5, alpha=0.5, label="train (each step)")
    ax.plot([m["step"] for m in evals], [m["train_loss"] for m in evals], "o-", label="train (eval)")
    ax.plot([m["step"] for m in evals], [m["val_loss"] for m in evals], "o-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class StopOnCtrlC:
    """Turn the first Ctrl-C into a request to checkpoint at the end of the
    current step and stop; a second one interrupts at once."""

    def __enter__(self) -> "StopOnCtrlC":
        self.requested = False
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        tqdm.write("Ctrl-C: saving a checkpoint after this step (press again to quit now)")

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGINT, self._previous)


# ---- the run -----------------------------------------------------------------------

def train(cfg: TrainConfig, ckpt: Checkpoint | None) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    plotting = cfg.plot
    if plotting:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib, which is not installed (pip install matplotlib): "
                  "training goes on without loss.png")
            plotting = False

    start = time.perf_counter()
    data = prepare_data(cfg.data, cfg.tokenizer, cfg.cache_dir or out / "data", cfg.vocab_size, cfg.gpt2_vocab,
                        cfg.val_fraction, cfg.errors)
    meta = data.meta
    print(f"data: {meta['source']}: {meta['documents']} document{'s' * (meta['documents'] != 1)}, {meta['train_tokens']:,} train + "
          f"{meta['val_tokens']:,} val tokens, vocabulary {meta['vocab_size']} "
          f"({'cached' if data.cached else 'prepared'} in {data.folder}, {time.perf_counter() - start:.1f}s)")
    if ckpt is not None and ckpt.state["data_key"] != meta["key"]:
        raise ValueError(f"the data or tokenizer changed since {ckpt.folder} was written "
                         f"(data key {ckpt.state['data_key']}, now {meta['key']}): resume needs the same corpus")

    mcfg = model_config(cfg, data.tokenizer.vocab_size)
    if cfg.lr_decay_iters is None:
        cfg.lr_decay_iters = cfg.max_iters
    # write back the preset's values, so run.json and the checkpoints say exactly what ran
    for k in MODEL_FIELDS:
        setattr(cfg, k, getattr(mcfg, k))
    config = {"train": asdict(cfg), "model": mcfg.to_dict()}
    write_json(out / "run.json", {**config, "data": meta})

    tt.manual_seed(cfg.seed)
    model = GPT(mcfg).to(cfg.device, getattr(np, cfg.dtype))
    model.train()
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2))
    sampler = BatchSampler(data.train, mcfg.block_size, cfg.batch_size, seed=[cfg.seed, 1], name="train")
    BatchSampler(data.val, mcfg.block_size, cfg.batch_size, seed=0, name="val")  # fail now if val is too short

    metrics_path = out / "metrics.jsonl"
    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state(cfg.device))
        opt.load_state_dict(ckpt.optimizer_state())
        sampler.load_state_dict(ckpt.state["rng"]["train_sampler"])
        set_rng_state(ckpt.state["rng"]["tinytensor"])
        step = ckpt.step
        # forget what a previous run logged past this checkpoint: it is about to be redone
        kept = [m for m in read_metrics(metrics_path) if m["step"] <= step]
        metrics_path.write_text("".join(json.dumps(m) + "\n" for m in kept))
        print(f"resuming from {ckpt.folder} at step {step}")
    elif metrics_path.exists():
        metrics_path.unlink()  # a new run in this folder (it has no checkpoint): a fresh log

    baseline = unigram_loss(data.train, data.val, mcfg.vocab_size)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * mcfg.block_size
    flops_per_token = model.flops_per_token(mcfg.block_size)
    peak = cfg.peak_flops or measure_peak_flops(cfg.device, cfg.dtype)
    print(f"model: {cfg.preset} {mcfg.n_layer} layers, {mcfg.n_head} heads, width {mcfg.n_embd}, block {mcfg.block_size}: "
          f"{model.num_parameters():,} parameters; {tokens_per_step:,} tokens per step")
    print(f"unigram baseline (val loss of predicting train-split token frequencies): {baseline:.4f}; "
          f"uniform guess: {math.log(mcfg.vocab_size):.4f}")
    print(f"MFU is measured against {peak / 1e9:.1f} GFLOP/s ({'given' if cfg.peak_flops else 'a matmul on this device'})")

    def checkpoint(at: int) -> Path:
        state = {"data_key": meta["key"],
                 "rng": {"train_sampler": sampler.state_dict(), "tinytensor": get_rng_state()}}
        return save_checkpoint(out, at, model.state_dict(), opt.state_dict(), config, state, data.tokenizer)

    params = model.parameters()
    last_saved = step if ckpt is not None else None
    resumed_at = step if ckpt is not None else None
    tokens_per_s = None
    with open(metrics_path, "a") as log, StopOnCtrlC() as ctrl_c, \
            tqdm(total=cfg.max_iters, initial=step, desc="train", dynamic_ncols=True) as bar:
        def write(row: dict) -> None:
            log.write(json.dumps(row) + "\n")
            log.flush()

        while True:
            # at a step boundary: `step` optimizer steps are done
            done = step >= cfg.max_iters
            if (step % cfg.eval_interval == 0 or done) and step != resumed_at:
                losses = evaluate(model, data, cfg, mcfg.block_size)
                text = sample_text(model, data, cfg.sample_tokens, cfg.seed) if cfg.sample_tokens else ""
                write({"step": step, "train_loss": losses["train"], "val_loss": losses["val"],
                       "val_ppl": math.exp(losses["val"]), "sample": text})
                tqdm.write(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
                           f"val perplexity {math.exp(losses['val']):.2f} (unigram baseline {baseline:.4f})")
                if text:
                    tqdm.write("  sample: " + text.replace("\n", "\n          "))
                if plotting:
                    plot_losses(read_metrics(metrics_path), out / "loss.png")
            if step != last_saved and (done or ctrl_c.requested or (step and step % cfg.checkpoint_interval == 0)):
                path = checkpoint(step)
                last_saved = step
                if ctrl_c.requested:
                    tqdm.write(f"stopped at step {step}; saved {path}; continue with --resume --out {out}")
            if done or ctrl_c.requested:
                break

            t0 = time.perf_counter()
            lr = optim.cosine_schedule(step, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters)
            for group in opt.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            for micro in range(cfg.grad_accum):
                x, y = sampler.sample()
                _, loss = model(x, targets=y)
                value = loss.item()
                if not math.isfinite(value):
                    raise Diverged(f"the loss became {value} at step {step + 1} (micro-batch {micro + 1})")
                # divided before backward, so the summed gradient is the mean over micro-batches:
                # the learning rate and the clipping threshold mean the same at any --grad-accum
                (loss / cfg.grad_accum).backward()
                loss_sum += value
            norm = optim.clip_grad_norm_(params, cfg.grad_clip or math.inf)
            if not math.isfinite(norm):
                raise Diverged(f"the gradient norm became {norm} at step {step + 1}")
            opt.step()
            opt.zero_grad()
            step += 1

            dt = time.perf_counter() - t0
            # smoothed, since single steps jitter with whatever else the machine is doing
            tokens_per_s = tokens_per_step / dt if tokens_per_s is None else 0.9 * tokens_per_s + 0.1 * tokens_per_step / dt
            mfu = flops_per_token * tokens_per_s / peak
            loss_value = loss_sum / cfg.grad_accum
            write({"step": step, "loss": loss_value, "lr": lr, "grad_norm": norm,
                   "tokens_per_s": tokens_per_s, "mfu": mfu, "time": time.perf_counter() - start})
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}", mfu=f"{mfu:.1%}")
    if plotting:
        plot_losses(read_metrics(metrics_path), out / "loss.png")
    print(f"done: step {step} in {time.perf_counter() - start:.0f}s; sample with: python -m gpt sample --checkpoint {out}")


# ---- fine-tuning (--task classify | instruct) -----------------------------------

def build_finetune_parser(task: str) -> argparse.ArgumentParser:
    from gpt.classify import TRAINABLE
    from gpt.finetune import FinetuneConfig

    d = FinetuneConfig()
    ap = argparse.ArgumentParser(
        prog=f"train.py --task {task}",
        description=("Fine-tune a pretrained GPT as a classifier (label<TAB>text, CSV or JSONL; last-token head; "
                     "70/10/20 split)" if task == "classify" else
                     "Instruction-tune a pretrained GPT on Alpaca-format JSON or JSONL (85/5/10 split), then "
                     "write its greedy answers to the test split to OUT/responses.jsonl"))
    ap.add_argument("--task", choices=TASKS)

    def add(flag: str, help: str = "", **kw: Any) -> None:
        default = getattr(d, flag[2:].replace("-", "_"))
        if "(default" not in help and not isinstance(default, bool):
            help = f"{help} (default: %(default)s)".lstrip()
        ap.add_argument(flag, default=default, help=help, **kw)

    ap.add_argument("--init-from", required=True,
                    help="the pretrained model: a train.py --out folder, one of its checkpoints, "
                         "or a Hugging Face GPT-2 folder (config.json, model.safetensors, vocab.json, merges.txt)")
    ap.add_argument("--data", required=True, help="the labelled examples" if task == "classify" else "the instructions")
    ap.add_argument("--out", default=f"out/{task}", help="where the fine-tuned model goes (default: %(default)s)")
    ap.add_argument("--overwrite", action="store_true", help="replace a fine-tuned model already in --out")
    add("--epochs", type=int)
    add("--batch-size", type=int)
    add("--lr", "peak learning rate; the default suits GPT-2, a small model trained here wants ~1e-3", type=float)
    add("--min-lr", "cosine-decay to this over the run (default: a constant lr)", type=float)
    add("--warmup-steps", type=int)
    add("--weight-decay", type=float)
    add("--grad-clip", "0 turns clipping off", type=float)
    add("--max-length", "tokens per example, longer ones are truncated (default: the model's block_size)", type=int)
    add("--eval-interval", "steps between evaluations; 0: only at the end", type=int)
    add("--eval-batches", "batches per split at those evaluations (the final one uses all)", type=int)
    add("--seed", "fixes the split, the batches and the new weights", type=int)
    add("--device", choices=["cpu", "cuda"])
    add("--lora-rank", "train low-rank adapters of this rank instead of the weights; 0: off", type=int)
    add("--lora-alpha", "adapter scale alpha (the update is alpha/rank * B A)", type=float)
    add("--merge-lora", "fold the adapters into the weights when saving", action="store_true")
    if task == "classify":
        add("--trainable", "which parameters train (ignored with LoRA: adapters + head)", choices=TRAINABLE)
        add("--balance", "undersample every class to the smallest one", action="store_true")
        ap.add_argument("--labels", type=lambda s: s.split(","),
                        help="comma-separated label names, fixing their ids and order (default: sorted labels of the data)")
    else:
        add("--mask-prompt", "learn the responses only (the instruction and input tokens get ignore_index)",
            action="store_true")
        add("--max-new-tokens", "tokens generated per test response", type=int)
        add("--n-responses", "how many test responses to write (default: all)", type=int)
        ap.add_argument("--prompt-template",
                        help='a JSON file {"with_input": "...", "without_input": "..."} (default: Alpaca\'s)')
    return ap


def finetune(task: str, argv: list[str] | None) -> None:
    from gpt.finetune import FinetuneConfig, finetune_classifier, finetune_instruct
    from gpt.instruct import ALPACA, PromptTemplate

    args = vars(build_finetune_parser(task).parse_args(argv))
    init_from, data, out = args.pop("init_from"), args.pop("data"), Path(args.pop("out"))
    overwrite, template_path = args.pop("overwrite"), args.pop("prompt_template", None)
    args.pop("task")
    if args["grad_clip"] == 0:
        args["grad_clip"] = None
    cfg = FinetuneConfig(**args)
    if (out / "config.json").exists() and not overwrite:
        raise ValueError(f"{out} already holds a model: pass --overwrite to replace it, or choose another --out")
    if Path(init_from).resolve() == out.resolve():
        raise ValueError(f"--out {out} is the --init-from folder: write the fine-tuned model elsewhere")
    if task == "classify":
        final = finetune_classifier(init_from, data, out, cfg)
        print(f"test accuracy {final['test_acc']:.2%}; classify with: "
              f'python -m gpt classify --checkpoint {out} "some text"')
    else:
        template = PromptTemplate.from_file(template_path) if template_path else ALPACA
        final = finetune_instruct(init_from, data, out, cfg, template)
        print(f"val loss {final['val_loss_before']:.4f} -> {final['val_loss']:.4f}; "
              f"answers in {out / 'responses.jsonl'}; chat with: python -m gpt chat --checkpoint {out}")


def task_of(argv: list[str] | None) -> str:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", choices=TASKS, default="pretrain")
    return pre.parse_known_args(argv)[0].task


def main(argv: list[str] | None = None) -> None:
    task = task_of(argv)
    if task != "pretrain":
        try:
            finetune(task, argv)
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"error: {e}")
        return
    try:
        cfg, ckpt = resolve_config(given_flags(argv))
        train(cfg, ckpt)
    except Diverged as e:
        latest = latest_checkpoint(cfg.out)
        kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint had been written yet"
        sys.exit(f"error: {e}. Stopped without saving; {kept}. "
                 "Try a lower --lr, a longer --warmup-iters or --grad-clip 1.0.")
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
