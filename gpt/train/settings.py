"""Every setting of a run, declared once: the fields below are also train.py's flags, and
the flags several commands share (DEVICE, SEED, Sampling: python -m gpt has them too).

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

from gpt import PRESETS, GPTConfig
from gpt.classifier import TRAINABLE
from tinytensor.backend import DEVICES

from .data import SAMPLING, TOKENIZERS
from .loop import LoopConfig
from .flags import Settings, at_least, flag, fraction, non_negative, non_negative_seed, positive, probability, setting

TASKS = ("pretrain", "classify", "instruct", "dpo")
# the model settings a pretraining run may give over its preset
MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias")

# ---- flags that pretraining and fine-tuning (or python -m gpt's commands) share ------------
DEVICE = flag("where the arrays live", choices=DEVICES)
ERRORS = flag("undecodable UTF-8 in the data: an error, or U+FFFD", choices=("strict", "replace"))
BATCH_SIZE = flag("sequences per micro-batch, over all processes", group="optimisation", check=at_least(1))
GRAD_ACCUM = flag("micro-batches per optimizer step", group="optimisation", check=at_least(1))
LR = flag("peak learning rate", group="optimisation", check=positive)
MIN_LR = flag("learning rate at the end of the cosine decay", group="optimisation", check=non_negative)
WARMUP = flag("steps of linear warmup", group="optimisation", check=at_least(0))
WEIGHT_DECAY = flag("AdamW decay of the matrices (biases and norms get none)", group="optimisation",
                    check=non_negative)
GRAD_CLIP = flag("clip the global gradient norm to this; 0 turns clipping off", group="optimisation",
                 check=non_negative)
SEED = flag("seeds what is random: new weights, the batches, dropout and a fine-tune's split", group="run",
            check=at_least(0))
# the fine-tuning tasks'
TUNED_OUT = flag("where the fine-tuned model goes", group="run")
EPOCHS = flag("passes over the training split", group="optimisation", check=at_least(1))
RESPONSE_TOKENS = flag("tokens generated per test response", group="run", check=at_least(0))
RESPONSES = flag("how many test responses to write", group="run", check=at_least(0), default_text="all")

# ---- python -m gpt's: what a command loads, and how it samples -----------------------------
LANGUAGE_MODEL = ("a train.py --out folder, one of its checkpoints, or a Hugging Face GPT-2, Llama, Qwen2 or Qwen3 "
                  "folder (config.json, safetensors weights, and tokenizer.json, or vocab.json + merges.txt for "
                  "GPT-2), or a .gguf file (llama, qwen2, qwen3)")
CHECKPOINT = flag(f"the model: {LANGUAGE_MODEL}; or an instruction fine-tune (train.py --task instruct or dpo)",
                  required=True)
MAX_NEW_TOKENS = flag("tokens to generate at most (in a chat: per reply)", group="sampling")
TEMPERATURE = flag("divides the logits before the draw; 0 = greedy", group="sampling")


@dataclass(frozen=True)
class Sampling(Settings):
    """How python -m gpt sample and chat draw each token; gpt/sampling.py checks the values.
    The defaults are chat's; a command may give max_new_tokens and temperature its own."""
    max_new_tokens: int = MAX_NEW_TOKENS(256)
    temperature: float = TEMPERATURE(0.0)
    top_k: int | None = setting(None, "draw from the k likeliest tokens only", group="sampling",
                                default_text="every token")
    top_p: float | None = setting(None, "draw from the fewest likeliest tokens whose probabilities reach p",
                                  group="sampling", default_text="every token")
    seed: int | None = setting(None, "seeds the draws", group="sampling", parse=non_negative_seed,
                               default_text="a fresh seed each run")


@dataclass(frozen=True)
class PretrainConfig(Settings):
    """The defaults are the no-argument run: BPE on CPython's reference docs and a
    nano-sized GPT, a few minutes on 2 CPU cores."""
    # data
    data: str | None = setting(None, "a folder made by python -m gpt prepare, or raw text: a text file, a .jsonl "
                               "with a 'text' field, or a folder of them (one document per file or line)",
                               group="data", default_text="CPython's reference docs (pydoc_data.topics)")
    errors: str = ERRORS("strict", group="data")
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
    batch_size: int = BATCH_SIZE(32)
    grad_accum: int = GRAD_ACCUM(1)
    # the step counts keep nanoGPT's flags (--max-iters ...); the code says "step" throughout
    max_steps: int = setting(500, "optimizer steps", group="optimisation", check=at_least(0), on_resume=True,
                             spelling="--max-iters")
    lr: float = LR(2e-3)
    min_lr: float = MIN_LR(2e-4)
    warmup_steps: int = WARMUP(50, spelling="--warmup-iters")
    decay_steps: int | None = setting(None, "step where the cosine reaches --min-lr; fixed by the first run, so "
                                         "plan a longer schedule from the start", group="optimisation",
                                         check=at_least(0), default_text="--max-iters", spelling="--lr-decay-iters")
    weight_decay: float = WEIGHT_DECAY(0.1)
    beta2: float = setting(0.99, "AdamW beta2", group="optimisation", check=probability)
    grad_clip: float = GRAD_CLIP(1.0)
    # evaluation, checkpoints, logging
    eval_interval: int = setting(100, "steps between evaluations", group="run", check=at_least(1), on_resume=True)
    eval_batches: int = setting(20, "batches per split in an evaluation", group="run", check=at_least(1),
                                on_resume=True, spelling="--eval-iters")
    full_val: bool = setting(False, "the final evaluation also scores the whole val split in disjoint block_size "
                             "windows (val_full_loss, val_full_bpb)", group="run", on_resume=True)
    sample_tokens: int = setting(120, "tokens generated at each evaluation; 0 for none", group="run",
                                 check=at_least(0), on_resume=True)
    checkpoint_interval: int = setting(200, "steps between checkpoints (also written at the end and on Ctrl-C)",
                                       group="run", check=at_least(1), on_resume=True)
    out: str = setting("out", "output folder", group="run", on_resume=True)
    resume: bool = setting(False, "continue from the latest good checkpoint in --out", group="run", on_resume=True)
    device: str = DEVICE("cpu", group="run", on_resume=True)
    dtype: str = setting("float32", "floating-point type of the weights", group="run",
                         choices=("float32", "float64"))
    seed: int = SEED(1337)
    plot: bool = setting(False, "write loss.png (needs matplotlib)", group="run", on_resume=True)
    peak_flops: float | None = setting(None, "the device's FLOP/s for MFU", group="run", check=positive,
                                       default_text="measured with a matmul at start", on_resume=True)
    profile: int = setting(0, "time N training steps op by op (after one unprofiled), print the table and stop "
                           "without saving; 0: train", group="run", check=at_least(0), on_resume=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        # fill in what the other settings imply, so run.json and the checkpoints say exactly what ran
        preset = PRESETS[self.preset]
        for name in MODEL_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(preset, name))
        if self.decay_steps is None:
            object.__setattr__(self, "decay_steps", self.max_steps)
        if self.min_lr > self.lr:
            raise ValueError(f"--min-lr ({self.min_lr}) is above --lr ({self.lr}): the schedule decays from --lr "
                             "down to --min-lr, so give a --min-lr at most --lr")
        if self.warmup_steps > self.decay_steps:
            raise ValueError(f"--warmup-iters ({self.warmup_steps}) must be between 0 and --lr-decay-iters "
                             f"(which is {self.decay_steps}; it defaults to --max-iters): lower it for a short run")

    def loop(self) -> LoopConfig:
        return LoopConfig(max_steps=self.max_steps, lr=self.lr, min_lr=self.min_lr, warmup_steps=self.warmup_steps,
                          decay_steps=self.decay_steps, grad_accum=self.grad_accum, grad_clip=self.grad_clip,
                          eval_interval=self.eval_interval, eval_at_start=True, eval_at_end=True,
                          checkpoint_interval=self.checkpoint_interval)

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig.preset(self.preset, vocab_size=vocab_size, **{k: getattr(self, k) for k in MODEL_FIELDS})


def changeable_on_resume() -> set[str]:
    """The settings a resumed pretraining run may change; the others come from the checkpoint."""
    return {f.name for f in fields(PretrainConfig) if f.metadata.get("on_resume")}


@dataclass(frozen=True)
class FinetuneConfig(Settings):
    """Settings both fine-tuning tasks share. The defaults are the book's (chapters 6-7)
    for a pretrained GPT-2; a small model trained here wants a larger lr."""
    data: str | None = setting(None, "the training examples", group="data", required=True)
    max_length: int | None = setting(None, "tokens per example, longer ones are truncated", group="data",
                                     check=at_least(2), default_text="the model's block_size")
    init_from: str | None = setting(None, f"the pretrained model: {LANGUAGE_MODEL}", group="model", required=True)
    lora_rank: int = setting(0, "train low-rank adapters of this rank instead of the weights; 0: off", group="model",
                             check=at_least(0))
    lora_alpha: float = setting(16.0, "adapter scale alpha (the update is alpha/rank * B A)", group="model",
                                check=positive)
    merge_lora: bool = setting(False, "fold the adapters into the weights when saving", group="model")
    epochs: int = EPOCHS(3)
    batch_size: int = BATCH_SIZE(8)
    grad_accum: int = GRAD_ACCUM(1)
    lr: float = LR(5e-5, default_text="5e-05, which suits GPT-2; a small model trained here wants ~1e-3")
    min_lr: float | None = MIN_LR(None, default_text="none: a constant lr")
    warmup_steps: int = WARMUP(0)
    weight_decay: float = WEIGHT_DECAY(0.1)
    grad_clip: float = GRAD_CLIP(1.0)
    out: str = TUNED_OUT("out/finetune")
    overwrite: bool = setting(False, "replace a fine-tuned model already in --out", group="run")
    eval_interval: int = setting(50, "steps between evaluations; 0: only at the end", group="run", check=at_least(0))
    eval_batches: int | None = setting(5, "batches per split at those evaluations (the final one uses all)",
                                       group="run", check=at_least(1))
    seed: int = SEED(123)
    device: str = DEVICE("cpu", group="run")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ValueError(f"--min-lr ({self.min_lr}) is above --lr ({self.lr}): the schedule decays from --lr "
                             "down to --min-lr, so give a --min-lr at most --lr")
        if self.merge_lora and not self.lora_rank:
            raise ValueError("--merge-lora needs adapters to merge: give a --lora-rank too")


@dataclass(frozen=True)
class ClassifyConfig(FinetuneConfig):
    """Classification: label<TAB>text, CSV or JSONL; a head on the last token; a 70/10/20 split."""
    data: str | None = setting(None, "the labelled examples: label<TAB>text, CSV label,text, or JSONL with "
                               "'label' and 'text'", group="data", required=True)
    out: str = TUNED_OUT("out/classify")
    trainable: str = setting("last-block", "which parameters train (ignored with LoRA: adapters + head)",
                             group="model", choices=TRAINABLE)
    balance: bool = setting(False, "undersample every class to the smallest one", group="data")
    labels: tuple[str, ...] | None = setting(None, "comma-separated label names, fixing their ids and order",
                                             group="data", default_text="sorted labels of the data")


@dataclass(frozen=True)
class InstructConfig(FinetuneConfig):
    """Instruction tuning: Alpaca-format JSON or JSONL; an 85/5/10 split; greedy answers to the test split."""
    data: str | None = setting(None, "the instructions: a JSON list or JSONL of {instruction, input, output}",
                               group="data", required=True)
    out: str = TUNED_OUT("out/instruct")
    mask_prompt: bool = setting(False, "learn the responses only (the instruction and input tokens get "
                                "ignore_index)", group="data")
    max_new_tokens: int = RESPONSE_TOKENS(256)
    n_responses: int | None = RESPONSES(None)
    prompt_template: str | None = setting(None, 'a JSON file {"with_input": "...", "without_input": "..."}, or '
                                          '"chat": the base\'s own chat template (only the assistant\'s turn is '
                                          'masked in with --mask-prompt)', group="data",
                                          default_text="the base's chat template where it has one, else Alpaca's")


@dataclass(frozen=True)
class DPOConfig(FinetuneConfig):
    """Preference tuning (DPO): pairs of a chosen and a rejected response to one instruction, JSON or JSONL;
    the 85/5/10 split of --task instruct; the reference is the starting model, frozen. The lr and epochs
    defaults are the book's (GPT-2 medium); a small model trained here wants ~5e-4. The test responses
    are written before and after tuning."""
    data: str | None = setting(None, "the preference pairs: a JSON list or JSONL of {instruction, input, chosen, "
                               "rejected}", group="data", required=True)
    out: str = TUNED_OUT("out/dpo")
    lr: float = LR(5e-6)
    epochs: int = EPOCHS(1)
    beta: float = setting(0.1, "how far from the reference the policy may move: the loss is "
                          "-log sigmoid(beta * (the chosen's log-ratio - the rejected's))", group="optimisation",
                          check=positive)
    cache_reference: bool = setting(False, "compute the reference's log-probabilities of every pair once, before "
                                    "training, instead of a forward per batch (without LoRA the reference's "
                                    "copy of the weights is then freed)", group="optimisation")
    max_new_tokens: int = RESPONSE_TOKENS(256)
    n_responses: int | None = RESPONSES(None)
    prompt_template: str | None = setting(None, 'a JSON file {"with_input": "...", "without_input": "..."}',
                                          group="data", default_text="Alpaca's")
    plot: bool = setting(False, "write dpo.png, the loss and the rewards at each evaluation (needs matplotlib)",
                         group="run")


CONFIGS: dict[str, type] = {"pretrain": PretrainConfig, "classify": ClassifyConfig, "instruct": InstructConfig,
                            "dpo": DPOConfig}
