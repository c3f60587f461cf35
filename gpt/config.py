"""The shape of a GPT: every architectural choice in one frozen dataclass, and named sizes.

    GPTConfig()                       GPT-2 small (124M) exactly
    GPTConfig.preset("nano", vocab_size=65)   a preset with some fields replaced

The Llama-family options (rotary positions, SwiGLU, RMS norm, grouped-query
attention, QK-norm, q/k/v-only biases, an untied head) are each off by
default, so the defaults are GPT-2.
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
    rope_base: float = 10000.0           # RoPE's theta
    n_kv_head: int | None = None         # grouped-query attention: key/value heads, each shared by
                                         # n_head / n_kv_head query heads (None: n_head, plain multi-head)
    head_dim: int | None = None          # features per head (None: n_embd / n_head)
    qk_norm: bool = False                # RMS norm over each query and key head, before RoPE (Qwen3)
    qkv_bias: bool = False               # biases on the q, k, v projections even with bias=False (Qwen2)
    tie_embeddings: bool = True          # the LM head is wte's matrix; False: a matrix of its own, lm_head
    intermediate_size: int | None = None  # the MLP's hidden width (None: 4 n_embd, or 8 n_embd / 3 for SwiGLU)
    rope_scaling: dict | None = None     # Llama 3's: {"rope_type": "llama3", "factor", "low_freq_factor",
                                         # "high_freq_factor", "original_max_position_embeddings"} (gpt/rope.py)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            _check_positive(name, getattr(self, name))
        for name in ("n_kv_head", "head_dim", "intermediate_size"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        if self.head_dim is None and self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"each head gets n_embd / n_head features (or set head_dim)"
            )
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head}): "
                             "each key/value head serves the same number of query heads")
        for name in ("norm_eps", "rope_base"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"GPTConfig.{name} must be a finite number > 0, got {value!r}")
        for name in ("bias", "qk_norm", "qkv_bias", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"GPTConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ValueError(f"GPTConfig.dropout must be a number in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, allowed in (("pos", ("learned", "rope")), ("mlp", ("gelu", "swiglu")),
                              ("norm", ("layernorm", "rmsnorm"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GPTConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.rope_scaling is not None:
            _check_rope_scaling(self.rope_scaling)
        if self.pos == "rope" and self.head_size % 2:
            raise ValueError(f"pos='rope' needs an even head size, got {self.head_size}")

    @property
    def head_size(self) -> int:
        """Features per head: head_dim, or n_embd / n_head when it is not set."""
        return self.head_dim if self.head_dim is not None else self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_kv_head, or n_head when it is not set."""
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def mlp_hidden(self) -> int:
        """The MLP's hidden width: intermediate_size, or 4 n_embd (GELU), or 8 n_embd / 3 (SwiGLU:
        three matrices instead of two, so 2/3 of the width keeps the parameter count; Llama's choice)."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        return int(8 * self.n_embd / 3) if self.mlp == "swiglu" else 4 * self.n_embd

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "GPTConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """The config of to_dict(); one saved before a field existed gets that field's default."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GPTConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


# the parameters of Llama 3's RoPE scaling (GPTConfig.rope_scaling; gpt/rope.py computes it)
LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def _check_rope_scaling(scaling: Any) -> None:
    keys = LLAMA3_KEYS
    if not isinstance(scaling, dict) or scaling.get("rope_type") != "llama3":
        raise ValueError(f"GPTConfig.rope_scaling must be None or Llama 3's {{'rope_type': 'llama3', ...}}, "
                         f"got {scaling!r}")
    if set(scaling) != {"rope_type", *keys}:
        raise ValueError(f"GPTConfig.rope_scaling of type llama3 needs exactly the keys {keys}, got {sorted(scaling)}")
    bad = [k for k in keys if isinstance(scaling[k], bool) or not isinstance(scaling[k], (int, float))
           or not scaling[k] > 0]
    if bad or not scaling["high_freq_factor"] > scaling["low_freq_factor"]:
        raise ValueError(f"GPTConfig.rope_scaling: {', '.join(bad) or 'high_freq_factor'} must be positive numbers "
                         f"(and high_freq_factor > low_freq_factor), got {scaling!r}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")


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
    # nano as a Llama: RoPE, SwiGLU, RMS norm, 4 query heads sharing 2 key/value heads, no biases,
    # an untied head; the MLP's width 368 makes up for the parameters that GQA and the missing
    # position table save, so at a 257-token vocabulary it has nano's parameter count (without biases)
    "llama-nano": GPTConfig(vocab_size=256, block_size=64, n_layer=4, n_head=4, n_kv_head=2, n_embd=128,
                            pos="rope", mlp="swiglu", norm="rmsnorm", bias=False, tie_embeddings=False,
                            intermediate_size=368),
}
