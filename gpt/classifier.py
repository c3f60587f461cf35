"""A GPT as a text classifier: the body's hidden state of the last real token -> a linear head.

The language-model head (vocabulary logits) is not used: a causal model's last
position is the only one that has seen the whole text, so its hidden state is
what the new head reads. With right padding that position is `length - 1`,
not `T - 1`; padding after it cannot leak back, attention being causal.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tinytensor import Tensor, nn
from tinytensor.backend import get_array_module, to_device

from .model import GPT

TRAINABLE = ("all", "last-block", "head")


class GPTClassifier(nn.Module):
    """A GPT body with a linear head over `n_classes` on the last real token.

    State-dict names: `gpt.*` for the body (a pretrained GPT's names, prefixed)
    and `head.weight` / `head.bias`.
    """

    def __init__(self, gpt: GPT, n_classes: int):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.n_embd, n_classes, dtype=gpt.wte.weight.dtype, device=gpt.wte.weight.device)

    def forward(self, idx: Any, lengths: Any) -> Tensor:
        """Class logits (B, n_classes) for right-padded ids (B, T) with true lengths (B,)."""
        x = self.gpt.hidden_states(idx)                      # (B, T, C)
        B, T = x.shape[:2]
        lengths = np.asarray(to_device(lengths, "cpu"), dtype=np.int64)   # checked on the host, then moved
        if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
            raise ValueError(f"lengths must be {B} numbers between 1 and {T} (one per row of ids), got {lengths}")
        xp = get_array_module(x.data)
        lengths = to_device(lengths, x.device)
        last = x[xp.arange(B), lengths - 1]                  # (B, C): the last real token of each row
        return self.head(self.gpt.ln_f(last))                # (B, n_classes); ln_f is per position

    def set_trainable(self, which: str) -> None:
        """Which parameters train: "all"; "last-block" (last block, final norm and
        head, the book's default); "head" (the new head only)."""
        if which not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {which!r}")
        for p in self.parameters():
            p.requires_grad = which == "all"
        parts = [self.head] + ([self.gpt.h[-1], self.gpt.ln_f] if which == "last-block" else [])
        for part in parts:
            for p in part.parameters():
                p.requires_grad = True
