"""Train a GPT: pretrain one from scratch, or fine-tune a pretrained one.

    python train.py                          # a small GPT on CPython's own reference docs, offline, minutes on a CPU
    python train.py --data input.txt --tokenizer bytes --preset nano --max-iters 2000
    python train.py --resume --max-iters 1000   # continue the latest good checkpoint in --out
    python -m gpt sample --checkpoint out       # sample from it

    python train.py --task classify --init-from out --data spam.tsv --balance   # fine-tune (see below)
    python train.py --task instruct --init-from gpt2/ --data instruction-data.json --mask-prompt

Pretraining, top to bottom: documents -> tokenizer -> train.bin / val.bin (cached
under --cache-dir) -> a GPT -> the training loop (random windows of block_size + 1
tokens, AdamW with warmup + cosine decay, gradient accumulation and clipping;
every --eval-interval steps the mean train/val loss on fixed batches, val
perplexity and a sample; a checkpoint every --checkpoint-interval steps).
Everything a run writes lands in --out:

    run.json          the fully resolved settings of the latest run
    metrics.jsonl     one JSON line per step (loss, lr, tokens/s, MFU) and per evaluation
    loss.png          with --plot (needs matplotlib)
    ckpt/step_N/      checkpoints (see gpt/train/checkpoint.py); the newest two are kept
    data/             the tokenized corpus, unless --cache-dir says elsewhere

--task classify | instruct fine-tunes a pretrained model (one of our runs or
checkpoints, or a Hugging Face GPT-2 folder) through the same loop; its flags are
listed by `python train.py --task classify --help` (see gpt/train/finetune.py).
Every flag is a field of a dataclass in gpt/train/config.py.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import tinytensor as tt
from gpt import GPT
from gpt.pretrained import write_json
from gpt.train.checkpoint import latest_checkpoint
from gpt.train.config import CONFIGS, TASKS, ClassifyConfig, InstructConfig, PretrainConfig
from gpt.train.data import prepare_data
from gpt.train.finetune import finetune_classifier, finetune_instruct
from gpt.train.flags import build_parser, parse_given
from gpt.train.loop import Diverged, Trainer
from gpt.train.metrics import MetricsLog, measure_peak_flops, plot_available, plot_losses
from gpt.train.output import check_output_folder
from gpt.train.pretrain import LanguageModeling, checkpoint_writer, resolve_run, restore, unigram_note
from tinytensor import optim


def pretrain(cfg: PretrainConfig, ckpt=None) -> None:
    """Train a GPT from scratch on cfg.data, or continue the checkpoint `ckpt`."""
    out = check_output_folder(cfg.out)
    plotting = cfg.plot and plot_available()
    if cfg.plot and not plotting:
        print("--plot needs matplotlib, which is not installed (pip install matplotlib): "
              "training goes on without loss.png")

    # 1. the data: documents -> tokens, cached in OUT/data (or --cache-dir)
    start = time.perf_counter()
    data = prepare_data(cfg.data, cfg.tokenizer, cfg.cache_dir or out / "data", cfg.vocab_size, cfg.gpt2_vocab,
                        cfg.val_fraction, cfg.errors)
    meta = data.meta
    print(f"data: {meta['source']}: {meta['documents']} document{'s' * (meta['documents'] != 1)}, "
          f"{meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens, vocabulary {meta['vocab_size']} "
          f"({'cached' if data.cached else 'prepared'} in {data.folder}, {time.perf_counter() - start:.1f}s)")

    # 2. the model and its optimizer: matrices decay, biases and norms do not
    mcfg = cfg.model_config(data.tokenizer.vocab_size)
    config = {"train": cfg.to_dict(), "model": mcfg.to_dict()}
    write_json(out / "run.json", {**config, "data": meta})
    tt.manual_seed(cfg.seed)
    model = GPT(mcfg).to(cfg.device, getattr(np, cfg.dtype))
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2))

    # 3. the loop, with next-token prediction as its task
    task = LanguageModeling(data, cfg, mcfg.block_size)
    log = MetricsLog(out / "metrics.jsonl")
    peak = cfg.peak_flops or measure_peak_flops(cfg.device, cfg.dtype)
    trainer = Trainer(model, opt, task, cfg.loop(), log=log, save=checkpoint_writer(out, model, opt, task, config),
                      after_eval=(lambda row: plot_losses(log.read(), out / "loss.png")) if plotting else None,
                      flops_per_token=model.flops_per_token(mcfg.block_size), peak_flops=peak)
    if ckpt is not None:
        restore(ckpt, model, opt, task, cfg.device)
        trainer.resume_at(ckpt.step)
        log.keep_until(ckpt.step)      # what a previous run logged past the checkpoint is about to be redone
        print(f"resuming from {ckpt.folder} at step {ckpt.step}")
    else:
        log.clear()                    # a new run in this folder (it has no checkpoint): a fresh log
    print(f"model: {cfg.preset} {mcfg.n_layer} layers, {mcfg.n_head} heads, width {mcfg.n_embd}, "
          f"block {mcfg.block_size}: {model.num_parameters():,} parameters; "
          f"{cfg.batch_size * cfg.grad_accum * mcfg.block_size:,} tokens per step")
    print(unigram_note(task, mcfg.vocab_size))
    source = "given" if cfg.peak_flops else "a matmul on this device"
    print(f"MFU is measured against {peak / 1e9:.1f} GFLOP/s ({source})")

    # 4. train; checkpoints are saved along the way, at the end and on Ctrl-C
    trainer.run()
    if trainer.step < cfg.max_iters:
        print(f"continue with: python train.py --resume --out {out}")
    print(f"done: step {trainer.step} in {time.perf_counter() - start:.0f}s; "
          f"sample with: python -m gpt sample --checkpoint {out}")


def classify(cfg: ClassifyConfig) -> None:
    final = finetune_classifier(cfg)
    print(f"test accuracy {final['test_acc']:.2%}; classify with: "
          f'python -m gpt classify --checkpoint {cfg.out} "some text"')


def instruct(cfg: InstructConfig) -> None:
    final = finetune_instruct(cfg)
    print(f"val loss {final['val_loss_before']:.4f} -> {final['val_loss']:.4f}; answers in {cfg.out}/responses.jsonl; "
          f"chat with: python -m gpt chat --checkpoint {cfg.out}")


# ---- the command line -----------------------------------------------------------------
def add_task_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default=argparse.SUPPRESS,
                        help="pretrain from text (default), or fine-tune: see --task classify --help")


def parse(argv: list[str] | None) -> tuple[str, dict]:
    """(task, the settings given on the command line)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", choices=TASKS, default="pretrain")
    task = pre.parse_known_args(argv)[0].task
    cls = CONFIGS[task]
    prog = "train.py" if task == "pretrain" else f"train.py --task {task}"
    parser = build_parser(cls, prog, __doc__ if task == "pretrain" else cls.__doc__, extra=add_task_flag)
    given = parse_given(parser, argv)
    given.pop("task", None)
    return task, given


def main(argv: list[str] | None = None) -> None:
    task, given = parse(argv)
    tt.tune_allocator()   # keep freed activation memory for reuse: see tinytensor/backend.py
    try:
        if task == "pretrain":
            pretrain(*resolve_run(given))
        elif task == "classify":
            classify(ClassifyConfig(**given))
        else:
            instruct(InstructConfig(**given))
    except Diverged as e:
        latest = latest_checkpoint(given.get("out", PretrainConfig.out)) if task == "pretrain" else None
        kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint had been written yet"
        sys.exit(f"error: {e}. Stopped without saving; {kept}. "
                 "Try a lower --lr, a longer warmup or --grad-clip 1.0.")
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
