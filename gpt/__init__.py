"""The GPT model and what is part of it: config, blocks, rotary positions, LoRA,
sampling with a KV cache, a classifier head, and model folders in and out.
The training application built on it lives in `gpt.train`."""
from .classifier import GPTClassifier
from .config import PRESETS, GPTConfig
from .model import GPT, KVCache
from .sampling import sample_next

__all__ = ["GPT", "GPTClassifier", "GPTConfig", "KVCache", "PRESETS", "sample_next"]
