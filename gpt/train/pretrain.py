"""Pretraining: next-token prediction on a corpus, as a task of the training loop.

    resolve_run(given)          the settings of a new run, or of the checkpoint to resume (and which one)
    LanguageModeling(data, cfg) the task: random windows, the summed next-token loss, evaluation and samples
    checkpoint_writer(...)      the save hook: model, optimizer, batch sampler and RNG, verified on resume

Bit-identical resume holds because every source of randomness has its own
saved state: the training batch sampler's generator, tinytensor's generator
(dropout), and the optimizer's moments and step counts. Evaluation and samples
draw from generators seeded afresh each time, so they never disturb training.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gpt import GPT
from gpt.evaluate import byte_lengths, sliding_windows, window_batches
from tinytensor import nn, optim
from tinytensor.functional import IGNORE_INDEX
from tinytensor.random import get_rng_state, set_rng_state

from .checkpoint import Checkpoint, latest_checkpoint, latest_good_checkpoint, save_checkpoint, step_folder
from .settings import PretrainConfig, changeable_on_resume
from .data import EOT, BatchSampler, PreparedData, make_sampler, unigram_loss
from .flags import flag_name
from .distributed import Comm, SingleProcess, seed_per_rank
from .loop import Batch, summed
from .metrics import perplexity


def resolve_run(given: dict[str, Any], comm: Comm | None = None,
                say: Callable[[str], None] = print) -> tuple[PretrainConfig, Checkpoint | None]:
    """The run's settings: the flags over the defaults for a new run; with --resume,
    the latest good checkpoint's settings with the flags that may change applied.
    Rank 0 decides (it alone sets broken checkpoints aside); the others get its answer."""
    comm = comm or SingleProcess()
    if comm.rank == 0:
        cfg, ckpt = _resolve(given, say)
    shared = comm.broadcast_json({"config": cfg.to_dict(), "checkpoint": ckpt and str(ckpt.folder)}
                                 if comm.rank == 0 else None)
    if comm.rank == 0:
        return cfg, ckpt
    folder = shared["checkpoint"]
    # rank 0 has verified that checkpoint's checksums: the others need not hash it again
    return PretrainConfig(**shared["config"]), Checkpoint.read(folder, verify=False) if folder else None


def _resolve(given: dict[str, Any], say: Callable[[str], None]) -> tuple[PretrainConfig, Checkpoint | None]:
    out = Path(given.get("out", PretrainConfig.out))
    if not given.get("resume"):
        latest = latest_checkpoint(out)
        if latest is not None:
            raise ValueError(
                f"{out} already holds a checkpoint ({latest.name}): pass --resume to continue it, "
                f"or choose another --out (or delete {out / 'ckpt'}) to start afresh"
            )
        return PretrainConfig(**given), None
    had_any = latest_checkpoint(out) is not None
    ckpt = latest_good_checkpoint(out, say)
    if ckpt is None:
        none = "no good checkpoint (see above)" if had_any else "no checkpoint"
        raise FileNotFoundError(f"--resume: there is {none} in {out / 'ckpt'} to continue from")
    # the names of the step counts in checkpoints written before the code said "step" throughout
    renamed = {"max_iters": "max_steps", "warmup_iters": "warmup_steps", "lr_decay_iters": "decay_steps",
               "eval_iters": "eval_batches"}
    saved = PretrainConfig(**{renamed.get(k, k): v for k, v in ckpt.config["train"].items()})
    may_change = changeable_on_resume()
    differences = [
        f"{flag_name(k, PretrainConfig)}: the checkpoint has {getattr(saved, k)!r}, the command line {v!r}"
        for k, v in given.items() if k not in may_change and getattr(saved, k) != v
    ]
    if differences:
        raise ValueError(
            f"the checkpoint {ckpt.folder} was trained with other settings:\n  " + "\n  ".join(differences)
            + "\ndrop these flags to continue it as it was, or start a new run with another --out"
        )
    cfg = PretrainConfig(**{**saved.to_dict(), **{k: v for k, v in given.items() if k in may_change}})
    if cfg.max_steps < ckpt.step:
        raise ValueError(f"--max-iters {cfg.max_steps} is below the checkpoint's step {ckpt.step} ({ckpt.folder}): "
                         f"give a --max-iters above {ckpt.step} to train on, or sample from it as it is")
    if cfg.max_steps > cfg.decay_steps:
        say(f"note: the learning-rate schedule ends at step {cfg.decay_steps} (--lr-decay-iters, fixed by the "
            f"first run); steps past it run at --min-lr {cfg.min_lr}")
    return cfg, ckpt


class LanguageModeling:
    """Next-token prediction: each micro-batch is `batch_size` random windows of the
    training tokens; evaluation is the mean loss over `eval_batches` fixed batches
    per split (and the val split's bits per byte), plus a short sample; with
    --full-val the final one also scores the whole val split in disjoint windows."""

    def __init__(self, data: PreparedData, cfg: PretrainConfig, block_size: int, main: bool = True):
        self.data, self.cfg, self.block_size = data, cfg, block_size
        self.main = main                                      # only the process that prints samples
        self.sampler = make_sampler(cfg.sampling, data.train, block_size, cfg.batch_size, seed=[cfg.seed, 1])
        if len(data.val) < block_size + 1 and data.meta.get("documents_kept", 1) > 1:
            # the split falls between documents, so --val-fraction cannot lengthen a last document that is short
            raise ValueError(
                f"the val split has {len(data.val)} tokens, fewer than block_size + 1 = {block_size + 1}: it holds "
                f"whole documents from the end of the corpus ({data.meta['documents_kept']} documents), and those are "
                "too short; give a smaller --block-size, put a longer document last, or give the corpus as one "
                "file (one document is cut at --val-fraction)")
        BatchSampler(data.val, block_size, cfg.batch_size, seed=0, name="val")   # fail now if val is too short
        self.baseline: float | None = None
        self.baseline_bpb: float | None = None
        self.token_bytes = byte_lengths(data.tokenizer, data.tokenizer.vocab_size)   # (V,) UTF-8 bytes per id

    def next_batch(self) -> Batch:
        x, y = self.sampler.sample()                          # (B, T) each
        return Batch((x, y), n_targets=y.size, n_tokens=x.size)

    def loss(self, model: nn.Module, rows: tuple[Any, ...]) -> Any:
        x, y = rows
        return model(x, targets=y, reduction="sum")[1]

    def evaluate(self, model: nn.Module, comm: Comm, final: bool) -> dict[str, Any]:
        """The batches come from generators seeded the same way every time: each
        evaluation sees the same windows (so the curve shows the model changing, not
        the batches), and the training sampler's stream is never touched."""
        losses, bpb = {}, {}
        for i, (split, tokens) in enumerate((("train", self.data.train), ("val", self.data.val))):
            sampler = BatchSampler(tokens, self.block_size, self.cfg.batch_size, seed=[self.cfg.seed, 100 + i],
                                   name=split)
            batches = [Batch(sampler.sample(), n_targets=0, n_tokens=0) for _ in range(self.cfg.eval_batches)]
            losses[split], bpb[split] = self._loss_and_bpb(model, batches, comm)
        row = {"train_loss": losses["train"], "val_loss": losses["val"], "val_ppl": perplexity(losses["val"]),
               "val_bpb": bpb["val"]}
        if final and self.cfg.full_val:
            # disjoint windows of block_size: every val token but the first scored once
            windows = sliding_windows(len(self.data.val), self.block_size, self.block_size)
            batches = [Batch(rows, n_targets=0, n_tokens=0)
                       for rows in window_batches(self.data.val, windows, self.cfg.batch_size)]
            row["val_full_loss"], row["val_full_bpb"] = self._loss_and_bpb(model, batches, comm)
        row["sample"] = self.sample(model) if self.cfg.sample_tokens and self.main else ""
        return row

    def _loss_and_bpb(self, model: nn.Module, batches: list[Batch], comm: Comm) -> tuple[float, float]:
        """(nats per target token, bits per UTF-8 byte of the targets) over the batches."""
        def measure(model: nn.Module, rows: tuple[Any, ...]) -> list[float]:
            x, y = rows
            kept = y[y != IGNORE_INDEX]
            return [model(x, targets=y, reduction="sum")[1].item(), kept.size, self.token_bytes[kept].sum()]
        loss_sum, count, n_bytes = summed(model, batches, measure, comm)
        return loss_sum / count, loss_sum / math.log(2) / n_bytes if n_bytes else math.nan

    def sample(self, model: GPT) -> str:
        """A short continuation, seeded so it does not consume tinytensor's stream:
        from <|endoftext|> (a document start) when the corpus has several documents,
        else from the corpus's first token."""
        tok = self.data.tokenizer
        eot = tok.special_tokens.get(EOT)
        prompt = [eot] if self.data.meta["documents_kept"] > 1 and eot is not None else [int(self.data.train[0])]
        ids = model.generate([prompt], self.cfg.sample_tokens, temperature=0.8, top_k=50, seed=self.cfg.seed)[0]
        return tok.decode(ids[1:].tolist() if prompt == [eot] else ids.tolist())

    def describe(self, row: dict[str, Any]) -> str:
        baseline = f" (unigram baseline {self.baseline:.4f})" if self.baseline is not None else ""
        line = (f"step {row['step']}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
                f"val perplexity {row['val_ppl']:.2f}{baseline}, val {row['val_bpb']:.4f} bits/byte")
        if "val_full_loss" in row:
            line += (f"\n  whole val split (disjoint windows): loss {row['val_full_loss']:.4f}, "
                     f"perplexity {perplexity(row['val_full_loss']):.2f}, {row['val_full_bpb']:.4f} bits/byte")
        if row["sample"]:
            line += "\n  sample: " + row["sample"].replace("\n", "\n          ")
        return line

    def state_dict(self) -> dict[str, Any]:
        return {"train_sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["train_sampler"])


def checkpoint_writer(out: Path, model: nn.Module, opt: optim.Optimizer, task: LanguageModeling,
                      config: dict, comm: Comm) -> Callable[[int], Path]:
    """The save hook of a pretraining run: everything resume needs to go on bit for bit.
    Every rank sends its dropout stream's state; rank 0 writes."""
    def save(step: int) -> Path:
        streams = comm.gather_json(get_rng_state())
        if comm.rank != 0:
            return step_folder(out, step)
        rng = {**task.state_dict(), "tinytensor": streams[0], **({"tinytensor_ranks": streams} if comm.size > 1 else {})}
        state = {"data_key": task.data.meta["key"], "rng": rng}
        return save_checkpoint(out, step, model.state_dict(), opt.state_dict(), config, state, task.data.tokenizer)
    return save


def restore(ckpt: Checkpoint, model: nn.Module, opt: optim.Optimizer, task: LanguageModeling, device: str,
            comm: Comm) -> None:
    """Put a checkpoint's weights, optimizer state and random states back. With as many
    ranks as wrote it, each rank gets its own dropout stream back; with another number,
    rank 0 takes the first and the others start streams of their own."""
    if ckpt.state["data_key"] != task.data.meta["key"]:
        raise ValueError(f"the data or tokenizer changed since {ckpt.folder} was written "
                         f"(data key {ckpt.state['data_key']}, now {task.data.meta['key']}): resume needs the same corpus")
    model.load_state_dict(ckpt.model_state(device))
    opt.load_state_dict(ckpt.optimizer_state())
    task.load_state_dict(ckpt.state["rng"])
    streams = ckpt.state["rng"].get("tinytensor_ranks") or [ckpt.state["rng"]["tinytensor"]]
    if len(streams) == comm.size or comm.rank == 0:
        set_rng_state(streams[comm.rank])
    else:
        seed_per_rank(task.cfg.seed, comm, ckpt.step)


def unigram_baselines(task: LanguageModeling, vocab_size: int) -> tuple[float, float]:
    """The loss to beat (`data.unigram_loss`, nats per token) and the same in bits per UTF-8 byte."""
    val = np.asarray(task.data.val)
    nats = unigram_loss(task.data.train, val, vocab_size)
    n_bytes = task.token_bytes[val].sum()
    return nats, (nats * len(val) / math.log(2) / n_bytes if n_bytes else math.nan)


def unigram_note(baseline: float, baseline_bpb: float, vocab_size: int) -> str:
    """The line that introduces the loss to beat beside a uniform guess's."""
    return (f"unigram baseline (val loss of predicting train-split token frequencies): {baseline:.4f}, "
            f"{baseline_bpb:.4f} bits/byte; uniform guess: {np.log(vocab_size):.4f}")
