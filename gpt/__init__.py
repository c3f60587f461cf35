"""The GPT model, sampling, and pretrained GPT-2 import, built on tinytensor."""
from .model import GPT, PRESETS, GPTConfig, KVCache
from .sampling import sample_next

__all__ = ["GPT", "GPTConfig", "KVCache", "PRESETS", "sample_next"]
