"""Rotary position embeddings (RoPE, Su et al. 2021) with a hand-written backward.

Each head's D features are read as D/2 pairs (x1[i], x2[i]) = (x[i], x[i + D/2])
(the "rotate half" layout of GPT-NeoX and Llama). The pair at position t is
rotated by the angle t * theta_i, theta_i = base^(-2i/D):

    y1 = x1 cos - x2 sin
    y2 = x2 cos + x1 sin

A rotation is orthogonal, so the backward is the rotation by the opposite angle.
Llama 3's scaling changes only the frequencies theta_i, constants of the
config, so it changes the tables and not the backward (docs/rope.md).

This is the layout of Hugging Face's Llama, Qwen2 and Qwen3 (`rotate_half`), and
their checkpoints store the q and k projections' rows for it, so those rows
load and export unpermuted (gpt/hf_llama.py).
"""
from __future__ import annotations

import numpy as np

from tinytensor import Tensor
from tinytensor.backend import get_array_module, to_device
from tinytensor.tensor import Function

from .config import LLAMA3_KEYS


def llama3_frequencies(theta: np.ndarray, factor: float, low_freq_factor: float, high_freq_factor: float,
                       original_max_position_embeddings: float) -> np.ndarray:
    """Llama 3.1's RoPE scaling of the frequencies theta (D/2,): a pair whose wavelength 2 pi / theta
    is longer than original / low_freq_factor turns `factor` times slower, one shorter than
    original / high_freq_factor keeps its speed, and in between the two are blended linearly in
    original / wavelength."""
    original = original_max_position_embeddings
    wavelength = 2 * np.pi / theta
    slow = theta / factor
    # 0 at the low-frequency edge (wavelength = original / low), 1 at the high one
    smooth = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * slow + smooth * theta
    return np.where(wavelength > original / low_freq_factor, slow,
                    np.where(wavelength < original / high_freq_factor, theta, blended))


def rope_frequencies(head_dim: int, base: float, scaling: dict | None = None) -> np.ndarray:
    """The frequencies theta_i = base^(-2i/D) (D/2,), in float64, with GPTConfig.rope_scaling applied."""
    theta = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    return theta if scaling is None else llama3_frequencies(theta, *(scaling[k] for k in LLAMA3_KEYS))


def rope_tables(head_dim: int, n_positions: int, base: float = 10000.0, dtype=np.float32,
                scaling: dict | None = None) -> tuple:
    """cos and sin tables, each (n_positions, head_dim / 2); `scaling` is GPTConfig.rope_scaling
    (None, or Llama 3's {"rope_type": "llama3", factor, low/high_freq_factor, original_max_position_embeddings})."""
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head size, got {head_dim}")
    angles = np.outer(np.arange(n_positions, dtype=np.float64), rope_frequencies(head_dim, base, scaling))  # (T, D/2)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


class Rotary(Function):
    """Derived in docs/rope.md; twin: reference.rotary."""

    def forward(self, x, cos, sin):
        # x (B, H, T, D); cos, sin (T, D/2)
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]  # (B, H, T, D/2) each
        self.cos, self.sin = cos, sin
        return get_array_module(x).concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    def backward(self, g):
        # y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin:
        # dx1 = g1 cos + g2 sin, dx2 = -g1 sin + g2 cos (the inverse rotation applied to g)
        half = g.shape[-1] // 2
        g1, g2 = g[..., :half], g[..., half:]
        cos, sin = self.cos, self.sin
        return get_array_module(g).concatenate([g1 * cos + g2 * sin, g2 * cos - g1 * sin], axis=-1)


def apply_rotary(x: Tensor, cos, sin) -> Tensor:
    """Rotate q or k (B, H, T, D) by the tables' rows for its T positions, cos and sin (T, D/2),
    which are moved to x's device if they are elsewhere (rope_tables makes them on the host)."""
    cos, sin = (to_device(a, x.device).astype(x.dtype, copy=False) for a in (cos, sin))
    return Rotary.apply(x, cos=cos, sin=sin)
