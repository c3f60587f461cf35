"""LoRA: low-rank adapters on a frozen GPT (Hu et al., 2021).

A projection y = x W^T + b with W (out, in) is fine-tuned as

    y = x W^T + b + s * (x A^T) B^T,      A (r, in), B (out, r), s = alpha / r

with W and b frozen and only A and B trained: r * (in + out) numbers instead of
in * out. B starts at zero, so the adapted model starts out exactly equal to
the base model; A starts small and random, so B's first gradient is not zero.
Dividing by r keeps the update's size about the same when r changes, so one
learning rate works for several ranks.

    apply_lora(model, rank, alpha)   wrap attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
                                     (and mlp.c_gate) of every block; freeze the rest
    lora_state_dict(model)           the adapters only (a checkpoint of a few KiB-MiB)
    merge_lora(model)                W += s B A and plain Linears again, for export
    with adapters_off(model): ...    the base model again, adapters skipped (DPO's reference)

A `LoRALinear` keeps the wrapped layer's `weight` and `bias` under their own
names, so a base checkpoint's state dict still fits the adapted model.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

import tinytensor.functional as F
from tinytensor import Tensor, nn
from tinytensor.nn import Parameter
from tinytensor.random import generator
from tinytensor.tensor import Function

# the projections of a block that get adapters, as (sub-module, attribute)
TARGETS = (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_gate"), ("mlp", "c_proj"))


class LoRALinearFunction(Function):
    """Derived in docs/lora.md; twin: reference.lora_linear.

    y = x W^T + b + s (x A^T) B^T as one graph node.

    Fused so that backward needs only x and the (N, r) product h = x A^T, and
    so that no gradient is ever computed for the frozen W and b.
    """

    def forward(self, x, a, b_up, w, bias, scale):
        x2 = x.reshape(-1, x.shape[-1])                  # (N, in)
        h = x2 @ a.T                                     # (N, r)   h = x A^T
        y = x2 @ w.T                                     # (N, out) x W^T
        y += scale * (h @ b_up.T)                        #        + s h B^T
        if bias is not None:
            y += bias                                    #        + b
        self.x2, self.h, self.a, self.b_up, self.w = x2, h, a, b_up, w
        self.scale, self.in_shape = scale, x.shape
        return y.reshape(x.shape[:-1] + w.shape[:1])     # (..., out)

    def backward(self, g):
        # y = x W^T + b + s h B^T with h = x A^T (docs/lora.md):
        #   dB = s g^T h        dh = s g B        dA = dh^T x        dx = g W + dh A
        #   (dW = g^T x and db = sum_N g only if the base layer is not frozen)
        g2 = g.reshape(-1, g.shape[-1])                  # (N, out)
        needs = self.needs_grad
        # y += s h B^T: dh = s g B
        dh = self.scale * (g2 @ self.b_up)               # (N, r)
        # y = x W^T and h = x A^T, two paths from x: dx = g W + dh A
        dx = (g2 @ self.w + dh @ self.a).reshape(self.in_shape) if needs[0] else None  # (..., in)
        # h = x A^T: dA = dh^T x
        da = dh.T @ self.x2 if needs[1] else None        # (r, in)
        # y += s h B^T: dB = s g^T h
        db_up = self.scale * (g2.T @ self.h) if needs[2] else None  # (out, r)
        # y = x W^T: dW = g^T x (not computed for a frozen W)
        dw = g2.T @ self.x2 if needs[3] else None        # (out, in)
        return dx, da, db_up, dw, (g2.sum(axis=0) if needs[4] else None)  # (out,)


def lora_linear(x: Tensor, a: Tensor, b_up: Tensor, weight: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    """x W^T + b + scale * (x A^T) B^T; x (..., in), A (r, in), B (out, r), W (out, in)."""
    out_features, in_features = weight.shape
    rank = a.shape[0]
    if x.shape[-1] != in_features or a.shape != (rank, in_features) or b_up.shape != (out_features, rank):
        raise ValueError(f"lora_linear: shapes do not fit: x {x.shape}, A {a.shape}, B {b_up.shape}, W {weight.shape} "
                         "(need x (..., in), A (r, in), B (out, r), W (out, in))")
    return LoRALinearFunction.apply(x, a, b_up, weight, bias, scale=float(scale))


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update s * B A."""

    enabled = True                     # False (see adapters_off): the frozen layer alone

    def __init__(self, linear: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be a positive integer, got {rank}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        # the same Parameter objects as the wrapped layer: nothing is copied
        self.weight = linear.weight.requires_grad_(False)
        self.bias = linear.bias.requires_grad_(False) if linear.bias is not None else None
        dtype, device = linear.weight.dtype, linear.weight.device
        # A as nn.Linear's default init (uniform, +-1/sqrt(in)); B zero so training starts from the base model
        bound = 1.0 / math.sqrt(self.in_features)
        self.lora_A = Parameter(generator().uniform(-bound, bound, (rank, self.in_features)), dtype=dtype, device=device)
        self.lora_B = Parameter(np.zeros((self.out_features, rank)), dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return F.linear(x, self.weight, self.bias)   # exactly what the base model's nn.Linear computes
        return lora_linear(x, self.lora_A, self.lora_B, self.weight, self.bias, self.scale)

    def merged_linear(self) -> nn.Linear:
        """A plain Linear computing the same function: W + s B A, and the same bias."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           dtype=self.weight.dtype, device=self.weight.device)
        delta = self.scale * (self.lora_B.data @ self.lora_A.data)   # (out, r) @ (r, in) -> (out, in)
        linear.weight.data[...] = self.weight.data + delta
        if self.bias is not None:
            linear.bias.data[...] = self.bias.data
        return linear

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, rank={self.rank}, alpha={self.alpha}")


def apply_lora(model: nn.Module, rank: int, alpha: float) -> nn.Module:
    """Freeze every parameter of `model` (a GPT), then wrap the attention and
    MLP projections of each block in `model.h` with a LoRALinear. In place;
    returns the model. Afterwards only the `lora_A`/`lora_B` parameters train."""
    if not hasattr(model, "h"):
        raise TypeError(f"apply_lora expects a GPT (with blocks in .h), got {type(model).__name__}")
    for p in model.parameters():
        p.requires_grad = False
    for block in model.h:
        for part, name in TARGETS:
            layer = getattr(getattr(block, part), name, None)
            if isinstance(layer, LoRALinear):
                raise ValueError("apply_lora on a model that already has adapters")
            if isinstance(layer, nn.Linear):
                setattr(getattr(block, part), name, LoRALinear(layer, rank, alpha))
    return model


def lora_state_dict(model: nn.Module) -> dict[str, Any]:
    """Name -> array copy for the adapter matrices only (names end in lora_A / lora_B)."""
    return {name: p.data.copy() for name, p in model.named_parameters() if name.endswith((".lora_A", ".lora_B"))}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (W += s B A) and put plain, trainable
    Linears back in place of the LoRALinears, so the model saves and loads like
    one that never had adapters. In place; returns the model."""
    for module in model.modules():
        for child_name, child in list(module._modules.items()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged_linear())
    for p in model.parameters():
        p.requires_grad = True
    return model


@contextmanager
def adapters_off(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, every LoRALinear of `model` computes its frozen base layer
    alone, bit for bit what the model computed before apply_lora: the starting
    model, with no second copy of its weights (DPO's reference). Raises if the
    model has no adapters."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    if not layers:
        raise ValueError("adapters_off: the model has no LoRA adapters (apply_lora first)")
    before = [layer.enabled for layer in layers]
    for layer in layers:
        layer.enabled = False
    try:
        yield model
    finally:
        for layer, was in zip(layers, before):
            layer.enabled = was


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of parameters."""
    params = model.parameters()
    return sum(p.size for p in params if p.requires_grad), sum(p.size for p in params)


__all__ = ["LoRALinear", "LoRALinearFunction", "adapters_off", "apply_lora", "count_parameters", "lora_linear",
           "lora_state_dict", "merge_lora"]
