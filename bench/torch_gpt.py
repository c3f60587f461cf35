"""The same GPT-2 in PyTorch eager, for bench/gpt.py's side-by-side timings.

Benchmark-only: torch is never a dependency of the package or its tests. The
model mirrors gpt/model.py exactly (pre-LN blocks, explicit softmax attention
with a causal mask, tanh GELU, tied head, AdamW with the same weight-decay
groups) and takes its weights from one of ours, so both start from the same
numbers and their first losses agree.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from tinytensor.backend import to_device


class Attention(nn.Module):
    def __init__(self, C: int, H: int, T: int):
        super().__init__()
        self.H = H
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.register_buffer("future", torch.triu(torch.ones(T, T, dtype=torch.bool), 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.H, C // self.H).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(C // self.H))
        att = att.masked_fill(self.future[:T, :T], float("-inf")).softmax(dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, C: int, H: int, T: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.attn = Attention(C, H, T)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        h = nn.functional.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh")
        return x + self.mlp.c_proj(h)


class GPT(nn.Module):
    def __init__(self, V: int, T: int, L: int, H: int, C: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        self.h = nn.ModuleList([Block(C, H, T) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def from_ours(model: Any) -> GPT:
    """A torch GPT holding a copy of the weights of our GPT `model` (default options, dropout 0)."""
    c = model.config
    if (c.pos, c.mlp, c.norm, c.bias, c.dropout) != ("learned", "gelu", "layernorm", True, 0.0):
        raise ValueError("the torch mirror covers GPT-2's own options only (learned positions, GELU, LayerNorm, biases)")
    ref = GPT(c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd)
    ref.load_state_dict({k: torch.from_numpy(np.array(to_device(v, "cpu"))) for k, v in model.state_dict().items()})
    return ref


def train_step(model: Any, x: np.ndarray, y: np.ndarray, weight_decay: float, lr: float,
               device: str = "cpu") -> Callable[[], float]:
    """One step (forward, loss, backward, AdamW) of the torch copy of `model` on `device`, as a
    callable returning the loss (its .item() waits for the device, so a timed call is the whole step)."""
    ref = from_ours(model).to(device)
    params = list(ref.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr)
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def step() -> float:
        loss = ref(tx, ty)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step
