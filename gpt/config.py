"""The shape of a GPT: every architectural choice in one frozen dataclass, and named sizes.

    GPTConfig()                       GPT-2 small (124M) exactly
    GPTConfig.preset("nano", vocab_size=65)   a preset with some fields replaced
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    pos: str = "learned"       # "learned" | "rope"
    mlp: str = "gelu"          # "gelu" (GPT-2, tanh form) | "swiglu"
    norm: str = "layernorm"    # "layernorm" | "rmsnorm"
    norm_eps: float = 1e-5
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"each head gets n_embd / n_head features"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, allowed in (("pos", ("learned", "rope")), ("mlp", ("gelu", "swiglu")),
                              ("norm", ("layernorm", "rmsnorm"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GPTConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"pos='rope' needs an even head size, got n_embd/n_head = {self.n_embd // self.n_head}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "GPTConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GPTConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


PRESETS: dict[str, GPTConfig] = {
    # GPT-2 as released by OpenAI (vocabulary 50257, context 1024)
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),            # 124M
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),    # 350M
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),     # 774M
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),        # 1558M
    # sized for a laptop CPU; the vocabulary is set by the tokenizer at hand
    "nano": GPTConfig(vocab_size=256, block_size=64, n_layer=4, n_head=4, n_embd=128),
    "micro": GPTConfig(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=192),
    "mini": GPTConfig(vocab_size=256, block_size=256, n_layer=6, n_head=6, n_embd=384),
}


