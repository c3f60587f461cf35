"""Choosing the next token from the model's logits."""
from __future__ import annotations

import math

import numpy as np


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a clear error for settings that cannot sample (NaN included, which no comparison catches)."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 is greedy), got {temperature!r}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:   # False for NaN too
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """One token id per row of logits (B, V).

    temperature=0 takes the arg-max (greedy). Otherwise the logits are divided
    by the temperature; top_k keeps only the k highest; top_p keeps the
    smallest set of highest-probability tokens whose total reaches p (the
    nucleus; the token that crosses p is kept). Then one token is drawn from
    the softmax of what is left.
    """
    check_sampling(temperature, top_k, top_p)
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return logits.argmax(axis=-1)
    rng = rng if rng is not None else np.random.default_rng()
    # the largest logit first set to 0: at a tiny temperature (1e-320) the others overflow to -inf,
    # which is the greedy limit, instead of inf - inf = NaN
    with np.errstate(over="ignore"):
        z = (logits - logits.max(axis=-1, keepdims=True)) / temperature
    order = np.argsort(-z, axis=-1, kind="stable")            # (B, V), likeliest first
    z_sorted = np.take_along_axis(z, order, axis=-1)
    keep = np.ones_like(z_sorted, dtype=bool)
    if top_k is not None:
        keep[:, top_k:] = False
    probs = np.exp(z_sorted - z_sorted[:, :1]) * keep
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None:
        before = np.cumsum(probs, axis=-1) - probs                # mass of the likelier tokens
        keep &= before < top_p
        probs = probs * keep
        probs /= probs.sum(axis=-1, keepdims=True)
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random((logits.shape[0], 1)) * cdf[:, -1:]
    pick = (cdf <= u).sum(axis=-1).clip(max=logits.shape[1] - 1)  # first index whose cdf exceeds u
    chosen = np.take_along_axis(order, pick[:, None], axis=-1)[:, 0]
    return chosen
