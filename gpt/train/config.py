"""Every setting of a run, declared once: the fields below are also train.py's flags.

    PretrainConfig     python train.py                       (a GPT from scratch on text)
    ClassifyConfig     python train.py --task classify       (a pretrained GPT -> a text classifier)
    InstructConfig     python train.py --task instruct       (a pretrained GPT -> follows instructions)
    DPOConfig          python train.py --task dpo            (an instruction-tuned GPT -> prefers the chosen answers)

Each is a frozen dataclass: it validates every value when it is made (errors
name the flag and the value given), fills in what depends on other settings,
and cannot change once the run starts.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from gpt import PRESETS, GPTConfig
from gpt.classifier import TRAINABLE

from .data import SAMPLING, TOKENIZERS
from .loop import LoopConfig
from .flags import at_least, fraction, non_negative, positive, probability, setting, validate

TASKS = ("pretrain", "classify", "instruct", "dpo")
DEVICES = ("cpu", "cuda")
# the model settings a pretraining run may give over its preset
MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias")


@dataclass(frozen=True)
class PretrainConfig:
    """The defaults are the no-argument run: BPE on CPython's reference docs and a
    nano-sized GPT, a few minutes on 2 CPU cores."""
    # data
    data: str | None = setting(None, "a folder made by python -m gpt prepare, or raw text: a text file, a .jsonl "
                               "with a 'text' field, or a folder of them (one document per file or line)",
                               group="data", default_text="CPython's reference docs (pydoc_data.topics)")
    errors: str = setting("strict", "undecodable UTF-8 in the data: an error, or U+FFFD", group="data",
                          choices=("strict", "replace"))
    tokenizer: str | None = setting(None, f"one of {', '.join(TOKENIZERS)}, or a saved tokenizer file", group="data",
                                    default_text="bpe; a prepared --data folder's own")
    vocab_size: int = setting(1024, "vocabulary of a trained --tokenizer bpe, <|endoftext|> included",
                              group="data", check=at_least(257))
    gpt2_vocab: str | None = setting(None, "folder with GPT-2's encoder.json and vocab.bpe, for --tokenizer gpt2",
                                     group="data")
    val_fraction: float = setting(0.1, "share of the tokens held out for validation, split between documents",
                                  group="data", check=fraction)
    cache_dir: str | None = setting(None, "where tokenized data is kept", group="data", default_text="OUT/data",
                                    on_resume=True)
    sampling: str = setting("random", "training windows drawn anywhere at random, or each window once per pass "
                            "over the data in a seeded order", group="data", choices=SAMPLING)
    # model: a preset, then these override it (None keeps the preset's value)
    preset: str = setting("nano", "model size", group="model", choices=tuple(PRESETS))
    n_layer: int | None = setting(None, "overrides the preset", group="model", check=at_least(1),
                                  default_text="the preset's")
    n_head: int | None = setting(None, "overrides the preset", group="model", check=at_least(1),
                                 default_text="the preset's")
    n_embd: int | None = setting(None, "overrides the preset", group="model", check=at_least(1),
                                 default_text="the preset's")
    block_size: int | None = setting(None, "overrides the preset", group="model", check=at_least(1),
                                     default_text="the preset's")
    dropout: float = setting(0.0, "dropout probability", group="model", check=probability)
    bias: bool | None = setting(None, "biases in the linear layers and norms (GPT-2 has them; nanoGPT's default "
                                "and Llama not)", group="model", default_text="the preset's")
    # optimisation
    batch_size: int = setting(32, "sequences per micro-batch, over all processes", group="optimisation",
                              check=at_least(1))
    grad_accum: int = setting(1, "micro-batches per optimizer step", group="optimisation", check=at_least(1))
    max_iters: int = setting(500, "optimizer steps", group="optimisation", check=at_least(0), on_resume=True)
    lr: float = setting(2e-3, "peak learning rate", group="optimisation", check=positive)
    min_lr: float = setting(2e-4, "learning rate at the end of the cosine decay", group="optimisation",
                            check=non_negative)
    warmup_iters: int = setting(50, "steps of linear warmup", group="optimisation", check=at_least(0))
    lr_decay_iters: int | None = setting(None, "step where the cosine reaches --min-lr; fixed by the first run, so "
                                         "plan a longer schedule from the start", group="optimisation",
                                         check=at_least(0), default_text="--max-iters")
    weight_decay: float = setting(0.1, "AdamW decay of the matrices (biases and norms get none)",
                                  group="optimisation", check=non_negative)
    beta2: float = setting(0.99, "AdamW beta2", group="optimisation", check=probability)
    grad_clip: float = setting(1.0, "clip the global gradient norm to this; 0 turns clipping off",
                               group="optimisation", check=non_negative)
    # evaluation, checkpoints, logging
    eval_interval: int = setting(100, "steps between evaluations", group="run", check=at_least(1), on_resume=True)
    eval_iters: int = setting(20, "batches per split in an evaluation", group="run", check=at_least(1),
                              on_resume=True)
    full_val: bool = setting(False, "the final evaluation also scores the whole val split in disjoint block_size "
                             "windows (val_full_loss, val_full_bpb)", group="run", on_resume=True)
    sample_tokens: int = setting(120, "tokens generated at each evaluation; 0 for none", group="run",
                                 check=at_least(0), on_resume=True)
    checkpoint_interval: int = setting(200, "steps between checkpoints (also written at the end and on Ctrl-C)",
                                       group="run", check=at_least(1), on_resume=True)
    out: str = setting("out", "output folder", group="run", on_resume=True)
    resume: bool = setting(False, "continue from the latest good checkpoint in --out", group="run", on_resume=True)
    device: str = setting("cpu", "where the arrays live", group="run", choices=DEVICES, on_resume=True)
    dtype: str = setting("float32", "floating-point type of the weights", group="run",
                         choices=("float32", "float64"))
    seed: int = setting(1337, "seeds the weights, the batches and dropout", group="run", check=at_least(0))
    plot: bool = setting(False, "write loss.png (needs matplotlib)", group="run", on_resume=True)
    peak_flops: float | None = setting(None, "the device's FLOP/s for MFU", group="run", check=positive,
                                       default_text="measured with a matmul at start", on_resume=True)
    profile: int = setting(0, "time N training steps op by op (after one unprofiled), print the table and stop "
                           "without saving; 0: train", group="run", check=at_least(0), on_resume=True)

    def __post_init__(self) -> None:
        validate(self)
        # fill in what the other settings imply, so run.json and the checkpoints say exactly what ran
        preset = PRESETS[self.preset]
        for name in MODEL_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(preset, name))
        if self.lr_decay_iters is None:
            object.__setattr__(self, "lr_decay_iters", self.max_iters)
        if self.min_lr > self.lr:
            raise ValueError(f"--min-lr ({self.min_lr}) is above --lr ({self.lr}): the schedule decays from --lr "
                             "down to --min-lr, so give a --min-lr at most --lr")
        if self.warmup_iters > self.lr_decay_iters:
            raise ValueError(f"--warmup-iters ({self.warmup_iters}) must be between 0 and --lr-decay-iters "
                             f"(which is {self.lr_decay_iters}; it defaults to --max-iters): lower it for a short run")

    def loop(self) -> LoopConfig:
        return LoopConfig(max_steps=self.max_iters, lr=self.lr, min_lr=self.min_lr, warmup_steps=self.warmup_iters,
                          decay_steps=self.lr_decay_iters, grad_accum=self.grad_accum, grad_clip=self.grad_clip,
                          eval_interval=self.eval_interval, eval_at_start=True, eval_at_end=True,
                          checkpoint_interval=self.checkpoint_interval)

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig.preset(self.preset, vocab_size=vocab_size, **{k: getattr(self, k) for k in MODEL_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def changeable_on_resume() -> set[str]:
    """The settings a resumed pretraining run may change; the others come from the checkpoint."""
    return {f.name for f in fields(PretrainConfig) if f.metadata.get("on_resume")}


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings both fine-tuning tasks share. The defaults are the book's (chapters 6-7)
    for a pretrained GPT-2; a small model trained here wants a larger lr."""
    init_from: str | None = setting(None, "the pretrained model: a train.py --out folder, one of its checkpoints, or "
                                    "a Hugging Face GPT-2, Llama, Qwen2 or Qwen3 folder (config.json, safetensors "
                                    "weights, and tokenizer.json, or vocab.json + merges.txt for GPT-2), or a "
                                    ".gguf file (llama, qwen2, qwen3)", required=True)
    data: str | None = setting(None, "the training examples", required=True)
    out: str = setting("out/finetune", "where the fine-tuned model goes")
    overwrite: bool = setting(False, "replace a fine-tuned model already in --out")
    epochs: int = setting(3, "passes over the training split", check=at_least(1))
    batch_size: int = setting(8, "examples per micro-batch, over all processes", check=at_least(1))
    grad_accum: int = setting(1, "micro-batches per optimizer step", check=at_least(1))
    lr: float = setting(5e-5, "peak learning rate; the default suits GPT-2, a small model trained here wants ~1e-3",
                        check=positive)
    min_lr: float | None = setting(None, "cosine-decay to this over the run", check=non_negative,
                                   default_text="a constant lr")
    warmup_steps: int = setting(0, "steps of linear warmup", check=at_least(0))
    weight_decay: float = setting(0.1, "AdamW decay of the matrices", check=non_negative)
    grad_clip: float = setting(1.0, "clip the global gradient norm to this; 0 turns clipping off", check=non_negative)
    max_length: int | None = setting(None, "tokens per example, longer ones are truncated", check=at_least(2),
                                     default_text="the model's block_size")
    eval_interval: int = setting(50, "steps between evaluations; 0: only at the end", check=at_least(0))
    eval_batches: int | None = setting(5, "batches per split at those evaluations (the final one uses all)",
                                       check=at_least(1))
    seed: int = setting(123, "fixes the split, the batches and the new weights", check=at_least(0))
    device: str = setting("cpu", "where the arrays live", choices=DEVICES)
    lora_rank: int = setting(0, "train low-rank adapters of this rank instead of the weights; 0: off",
                             check=at_least(0))
    lora_alpha: float = setting(16.0, "adapter scale alpha (the update is alpha/rank * B A)", check=positive)
    merge_lora: bool = setting(False, "fold the adapters into the weights when saving")

    def __post_init__(self) -> None:
        validate(self)
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ValueError(f"--min-lr ({self.min_lr}) is above --lr ({self.lr}): the schedule decays from --lr "
                             "down to --min-lr, so give a --min-lr at most --lr")
        if self.merge_lora and not self.lora_rank:
            raise ValueError("--merge-lora needs adapters to merge: give a --lora-rank too")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ClassifyConfig(FinetuneConfig):
    """Classification: label<TAB>text, CSV or JSONL; a head on the last token; a 70/10/20 split."""
    data: str | None = setting(None, "the labelled examples: label<TAB>text, CSV label,text, or JSONL with "
                               "'label' and 'text'", required=True)
    out: str = setting("out/classify", "where the fine-tuned model goes")
    trainable: str = setting("last-block", "which parameters train (ignored with LoRA: adapters + head)",
                             choices=TRAINABLE)
    balance: bool = setting(False, "undersample every class to the smallest one")
    labels: tuple[str, ...] | None = setting(None, "comma-separated label names, fixing their ids and order",
                                             default_text="sorted labels of the data")


@dataclass(frozen=True)
class InstructConfig(FinetuneConfig):
    """Instruction tuning: Alpaca-format JSON or JSONL; an 85/5/10 split; greedy answers to the test split."""
    data: str | None = setting(None, "the instructions: a JSON list or JSONL of {instruction, input, output}",
                               required=True)
    out: str = setting("out/instruct", "where the fine-tuned model goes")
    mask_prompt: bool = setting(False, "learn the responses only (the instruction and input tokens get "
                                "ignore_index)")
    max_new_tokens: int = setting(256, "tokens generated per test response", check=at_least(0))
    n_responses: int | None = setting(None, "how many test responses to write", check=at_least(0),
                                      default_text="all")
    prompt_template: str | None = setting(None, 'a JSON file {"with_input": "...", "without_input": "..."}, or '
                                          '"chat": the base\'s own chat template (only the assistant\'s turn is '
                                          'masked in with --mask-prompt)',
                                          default_text="the base's chat template where it has one, else Alpaca's")


@dataclass(frozen=True)
class DPOConfig(FinetuneConfig):
    """Preference tuning (DPO): pairs of a chosen and a rejected response to one instruction, JSON or JSONL;
    the 85/5/10 split of --task instruct; the reference is the starting model, frozen. The lr and epochs
    defaults are the book's (GPT-2 medium); a small model trained here wants ~5e-4."""
    data: str | None = setting(None, "the preference pairs: a JSON list or JSONL of {instruction, input, chosen, "
                               "rejected}", required=True)
    out: str = setting("out/dpo", "where the tuned model goes")
    lr: float = setting(5e-6, "peak learning rate", check=positive)
    epochs: int = setting(1, "passes over the training split", check=at_least(1))
    beta: float = setting(0.1, "how far from the reference the policy may move: the loss is "
                          "-log sigmoid(beta * (the chosen's log-ratio - the rejected's))", check=positive)
    cache_reference: bool = setting(False, "compute the reference's log-probabilities of every pair once, before "
                                    "training, instead of a forward per batch (without LoRA the reference's "
                                    "copy of the weights is then freed)")
    max_new_tokens: int = setting(256, "tokens generated per test response", check=at_least(0))
    n_responses: int | None = setting(None, "how many test responses to write (before and after tuning)",
                                      check=at_least(0), default_text="all")
    prompt_template: str | None = setting(None, 'a JSON file {"with_input": "...", "without_input": "..."}',
                                          default_text="Alpaca's")
    plot: bool = setting(False, "write dpo.png, the loss and the rewards at each evaluation (needs matplotlib)")


CONFIGS: dict[str, type] = {"pretrain": PretrainConfig, "classify": ClassifyConfig, "instruct": InstructConfig,
                            "dpo": DPOConfig}
