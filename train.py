"""Train a GPT: pretrain one from scratch, or fine-tune a pretrained one.

    python train.py                          # a small GPT on CPython's own reference docs, offline, minutes on a CPU
    python train.py --data input.txt --tokenizer bytes --preset nano --max-iters 2000
    python train.py --resume --max-iters 1000   # continue the latest good checkpoint in --out
    python -m gpt sample --checkpoint out       # sample from it

    python train.py --task classify --init-from out --data spam.tsv --balance   # fine-tune (see below)
    python train.py --task instruct --init-from gpt2/ --data instruction-data.json --mask-prompt
    python train.py --task dpo --init-from out/instruct --data instruction-data-with-preference.json

Pretraining, top to bottom: documents -> tokenizer -> token shards (a folder from
python -m gpt prepare, or prepared here once and cached under --cache-dir) -> a GPT -> the training loop (random windows of block_size + 1
tokens, AdamW with warmup + cosine decay, gradient accumulation and clipping;
every --eval-interval steps the mean train/val loss on fixed batches, val
perplexity and a sample; a checkpoint every --checkpoint-interval steps).
Everything a run writes lands in --out:

    run.json          the fully resolved settings of the latest run
    metrics.jsonl     one JSON line per step (loss, lr, tokens/s, MFU) and per evaluation
    loss.png          with --plot (needs matplotlib)
    ckpt/step_N/      checkpoints (see gpt/train/checkpoint.py); the newest two are kept
    data/             the tokenized corpus, unless --cache-dir says elsewhere

--task classify | instruct | dpo fine-tunes a pretrained model (one of our runs or
checkpoints, or a Hugging Face GPT-2 / Llama / Qwen folder) through the same loop; its flags are
listed by `python train.py --task classify --help` (see gpt/train/finetune.py).
Every flag is a field of a dataclass in gpt/train/settings.py.
"""
from __future__ import annotations

import os

# Under `mpiexec -n N` each rank's BLAS gets its share of this machine's cores (unless you set
# OMP_NUM_THREADS or OPENBLAS_NUM_THREADS yourself). BLAS reads this once, when NumPy loads it,
# so it comes before every other import.
_ranks_here = int(os.environ.get("MPI_LOCALNRANKS") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or 1)
if _ranks_here > 1 and not {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"} & os.environ.keys():
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_name] = str(max(1, (os.cpu_count() or 1) // _ranks_here))

import argparse  # noqa: E402  (the imports that load NumPy come after the lines above)
import contextlib  # noqa: E402
import errno  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt import GPT  # noqa: E402
from gpt.pretrained import write_json  # noqa: E402
from gpt.train import distributed  # noqa: E402
from gpt.train.checkpoint import Checkpoint, DiskFull, latest_checkpoint  # noqa: E402
from gpt.train.settings import CONFIGS, TASKS, ClassifyConfig, DPOConfig, InstructConfig, PretrainConfig  # noqa: E402
from gpt.train.data import prepare_data  # noqa: E402
from gpt.train.dpo import finetune_dpo  # noqa: E402
from gpt.train.finetune import finetune_classifier, finetune_instruct  # noqa: E402
from gpt.train.flags import build_parser, parse_given  # noqa: E402
from gpt.train.distributed import Comm  # noqa: E402
from gpt.train.loop import Diverged, Trainer  # noqa: E402
from gpt.train.metrics import MetricsLog, measure_peak_flops, plot_available, plot_losses  # noqa: E402
from gpt.train.folders import check_folder_kind, check_output_folder, hold_output_folder  # noqa: E402
from gpt.train.pretrain import LanguageModeling, checkpoint_writer, resolve_run, restore, unigram_baselines, unigram_note  # noqa: E402
from tinytensor import optim  # noqa: E402


def pretrain(cfg: PretrainConfig, ckpt: Checkpoint | None, comm: Comm) -> None:
    """Train a GPT from scratch on cfg.data, or continue the checkpoint `ckpt`. With
    several ranks, each takes its share of every batch; rank 0 alone writes and prints."""
    main = comm.rank == 0
    say = comm.print
    out = check_output_folder(cfg.out)
    distributed.check_divides(cfg.batch_size, comm)
    distributed.on_device(cfg.device, comm)
    plotting = plot_available(cfg.plot, "loss.png", say)

    # 1. the data: documents -> tokens, cached in OUT/data (or --cache-dir); rank 0 prepares, the others read
    start = time.perf_counter()
    data = comm.first_on_rank_0(lambda: prepare_data(cfg.data, cfg.tokenizer, cfg.cache_dir or out / "data",
                                                     cfg.vocab_size, cfg.gpt2_vocab, cfg.val_fraction, cfg.errors))
    meta = data.meta
    docs = meta["documents_kept"]
    say(f"data: {meta['source']}: {docs} document{'s' * (docs != 1)}, "
        f"{meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens, vocabulary {meta['vocab_size']} "
        f"({'cached' if data.cached else 'prepared'} in {data.folder}, {time.perf_counter() - start:.1f}s)")

    # 2. the model and its optimizer (the same on every rank): matrices decay, biases and norms do not
    mcfg = cfg.model_config(data.tokenizer.vocab_size)
    config = {"train": cfg.to_dict(), "model": mcfg.to_dict()}
    if main:
        write_json(out / "run.json", {**config, "data": meta})
    tt.manual_seed(cfg.seed)
    model = GPT(mcfg).to(cfg.device, getattr(np, cfg.dtype))
    distributed.seed_per_rank(cfg.seed, comm)
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2))

    # 3. the loop, with next-token prediction as its task
    task = LanguageModeling(data, cfg, mcfg.block_size, main=main)
    log = MetricsLog(out / "metrics.jsonl", say=say)
    peak = cfg.peak_flops * comm.size if cfg.peak_flops else comm.sum([measure_peak_flops(cfg.device, cfg.dtype)])[0]
    trainer = Trainer(model, opt, task, cfg.loop(), log=log, comm=comm,
                      save=checkpoint_writer(out, model, opt, task, config, comm),
                      after_eval=(lambda row: plot_losses(log.read(), out / "loss.png")) if plotting else None,
                      flops_per_token=model.flops_per_token(mcfg.block_size), peak_flops=peak)
    if ckpt is not None:
        restore(ckpt, model, opt, task, cfg.device, comm)
        trainer.resume_at(ckpt.step)
        if main:
            log.keep_until(ckpt.step)  # what a previous run logged past the checkpoint is about to be redone
        say(f"resuming from {ckpt.folder} at step {ckpt.step}")
    elif main:
        log.clear()                    # a new run in this folder (it has no checkpoint): a fresh log
    say(distributed.layout(comm) or f"one process, {os.environ.get('OMP_NUM_THREADS', 'all')} BLAS threads")
    say(f"model: {cfg.preset} {mcfg.n_layer} layers, {mcfg.n_head} heads, width {mcfg.n_embd}, "
        f"block {mcfg.block_size}: {model.num_parameters():,} parameters; "
        f"{cfg.batch_size * cfg.grad_accum * mcfg.block_size:,} tokens per step")
    if cfg.sampling == "epoch":
        say(f"one pass over the train split: {task.sampler.steps_per_epoch(cfg.grad_accum):,.1f} steps")
    task.baseline, task.baseline_bpb = unigram_baselines(task, mcfg.vocab_size)   # measured once, shown at every evaluation
    say(unigram_note(task.baseline, task.baseline_bpb, mcfg.vocab_size))
    say(f"MFU is measured against {peak / 1e9:.1f} GFLOP/s ({'given' if cfg.peak_flops else 'matmuls on this device'})")

    if cfg.profile:                    # where a step's time goes, op by op (tinytensor/profiler.py)
        with open(os.devnull, "w") as quiet:   # the other ranks profile too, and print nothing
            tt.profile_steps(trainer.train_step, cfg.profile, file=sys.stdout if main else quiet)
        return

    # 4. train; checkpoints are saved along the way, at the end and on Ctrl-C
    trainer.run()
    if trainer.stopped_by is not None:   # saved; a scheduler's SIGTERM (or a Ctrl-C) must not read as success
        say(f"continue with: python train.py --resume --out {out}")
        raise SystemExit(128 + trainer.stopped_by)
    if trainer.step < cfg.max_steps:
        say(f"continue with: python train.py --resume --out {out}")
    say(f"done: step {trainer.step} in {time.perf_counter() - start:.0f}s; "
        f"sample with: python -m gpt sample --checkpoint {out}")


def finetune(cfg: ClassifyConfig | InstructConfig | DPOConfig, comm: Comm) -> None:
    """Fine-tune a pretrained GPT through the same loop (gpt/train/finetune.py has the steps)."""
    distributed.check_divides(cfg.batch_size, comm)
    distributed.on_device(cfg.device, comm)
    say = comm.print
    run = {ClassifyConfig: finetune_classifier, InstructConfig: finetune_instruct, DPOConfig: finetune_dpo}[type(cfg)]
    final = run(cfg, say=say, comm=comm)
    if "stopped_by" in final:            # saved as it was: still not a finished run
        say(f"saved the model as it was in {cfg.out}")
        raise SystemExit(128 + signal.Signals[final["stopped_by"]])
    if isinstance(cfg, ClassifyConfig):
        say(f"test accuracy {final['test_acc']:.2%}; classify with: "
            f'python -m gpt classify --checkpoint {cfg.out} "some text"')
    elif isinstance(cfg, DPOConfig):
        say(f"val reward accuracy {final['val_reward_accuracy']:.3f}, margin {final['val_reward_margin']:.4f}; answers "
            f"before and after in {cfg.out}/responses.jsonl; chat with: python -m gpt chat --checkpoint {cfg.out}")
    else:
        say(f"val loss {final['val_loss_before']:.4f} -> {final['val_loss']:.4f}; answers in "
            f"{cfg.out}/responses.jsonl; chat with: python -m gpt chat --checkpoint {cfg.out}")


# ---- the command line -----------------------------------------------------------------
def task_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    # hand-written: it chooses which settings class makes the other flags, so it is read first, on its own
    parser.add_argument("--task", choices=TASKS, default="pretrain",
                        help="pretrain from text (default), or fine-tune: see --task classify --help")
    return parser


def parse(argv: list[str] | None) -> tuple[str, dict]:
    """(task, the settings given on the command line)."""
    task_parser = task_flag(argparse.ArgumentParser(add_help=False))
    task = task_parser.parse_known_args(argv)[0].task
    cls = CONFIGS[task]
    prog = "train.py" if task == "pretrain" else f"train.py --task {task}"
    parser = build_parser(cls, prog, __doc__ if task == "pretrain" else cls.__doc__, parents=(task_parser,))
    given = parse_given(parser, argv)
    given.pop("task")
    return task, given


def main(argv: list[str] | None = None) -> None:
    task, given = parse(argv)
    comm = distributed.connect()      # one process, or the ranks of mpiexec
    tt.tune_allocator()               # keep freed activation memory for reuse: see tinytensor/backend.py
    try:
        # the flags first (a resumed run's are checked against its checkpoint, in resolve_run)
        cfg = CONFIGS[task](**given) if task != "pretrain" or not given.get("resume") else None
        out = given.get("out", CONFIGS[task].out)
        # one run per folder: rank 0 holds the lock (the other ranks write nothing)
        with hold_output_folder(out) if comm.rank == 0 else contextlib.nullcontext():
            if task == "pretrain":
                check_folder_kind(out, "a pretraining run")
                pretrain(*resolve_run(given, comm, say=comm.print), comm)
            else:
                finetune(cfg, comm)
    except Diverged as e:
        latest = latest_checkpoint(given.get("out", PretrainConfig.out)) if task == "pretrain" else None
        kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint had been written yet"
        distributed.fail(comm, f"error: {e}. Stopped without saving; {kept}. "
                               "Try a lower --lr, a longer warmup or --grad-clip 1.0.")
    except (ValueError, FileNotFoundError, DiskFull) as e:
        distributed.fail(comm, f"error: {e}")
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        distributed.fail(comm, f"error: the disk is full: writing {e.filename or 'a file'} failed ({e.strerror}); "
                               "free some space, or choose another --out")
    except BaseException as e:
        if comm.size > 1 and not isinstance(e, SystemExit):
            import traceback

            distributed.fail(comm, "".join(traceback.format_exception(e)).rstrip())
        raise


if __name__ == "__main__":
    main()
