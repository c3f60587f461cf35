"""One seeded random stream for everything tinytensor draws (init, dropout, randn).

Numbers are always drawn on the CPU with NumPy and then moved, so a seed gives
the same values on every device.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .tensor import DEFAULT_DTYPE, Tensor, _shape_args

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _generator


def get_rng_state() -> dict:
    """The generator's state as JSON-friendly data (for exact resumption)."""
    return _generator.bit_generator.state


def set_rng_state(state: dict) -> None:
    _generator.bit_generator.state = state


def randn(*shape: Any, dtype: Any = None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    data = _generator.standard_normal(_shape_args(shape), dtype=np.float64).astype(dtype or DEFAULT_DTYPE)
    return Tensor(data, requires_grad=requires_grad, device=device)


def rand(*shape: Any, dtype: Any = None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    data = _generator.random(_shape_args(shape), dtype=np.float64).astype(dtype or DEFAULT_DTYPE)
    return Tensor(data, requires_grad=requires_grad, device=device)
