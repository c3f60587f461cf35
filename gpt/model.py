"""GPT-2, written with tinytensor.

    idx (B, T) -> token embedding + position embedding -> n_layer x Block -> LayerNorm -> logits (B, T, V)
    Block: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))        (pre-LayerNorm, residual stream of width C)

Parameter names follow Hugging Face's GPT-2 (`wte`, `h.0.attn.c_attn`, ...), so
loading its weights is a matter of transposing its Conv1D matrices.
Options beyond GPT-2 are off by default; with the defaults this is GPT-2
exactly. With them it is a Llama, Qwen2 or Qwen3 (gpt/pretrained.py maps the
names): rotary positions, SwiGLU, RMSNorm, no biases, grouped-query attention
(n_kv_head key/value heads shared by the n_head query heads), QK-norm, q/k/v
biases, an untied LM head.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np

import tinytensor as tt
import tinytensor.functional as F
from tinytensor import Tensor, nn
from tinytensor.backend import get_array_module, to_device
from tinytensor.random import generator

from .config import PRESETS, GPTConfig
from .pretrained import read_pretrained, write_hf
from .rope import apply_rotary, rope_tables
from .sampling import check_sampling, sample_next

__all__ = ["GPT", "GPTConfig", "KVCache", "PRESETS"]


def _norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        H, Hkv, D = config.n_head, config.kv_heads, config.head_size
        # q, k, v in one matmul: rows [0, H D) make the queries, then Hkv D rows each the keys and values
        self.c_attn = nn.Linear(config.n_embd, (H + 2 * Hkv) * D, bias=config.bias or config.qkv_bias)
        self.c_proj = nn.Linear(H * D, config.n_embd, bias=config.bias)
        if config.qk_norm:
            # one weight of D features, shared by every head (Qwen3)
            self.q_norm = nn.RMSNorm(D, eps=config.norm_eps)
            self.k_norm = nn.RMSNorm(D, eps=config.norm_eps)

    def forward(self, x: Tensor, rope: tuple | None = None, cache: "KVCache | None" = None) -> Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.config.n_head, self.config.kv_heads, self.config.head_size
        qkv = self.c_attn(x).reshape(B, T, H + 2 * Hkv, D).swapaxes(1, 2)  # (B, H + 2 Hkv, T, D)
        q, k, v = qkv.split([H, Hkv, Hkv], axis=1)              # (B, H, T, D), (B, Hkv, T, D) twice
        if self.config.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:                                     # the tables' rows for these T positions
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.append(k, v)                            # (B, Hkv, cached + T, D)
        p = self.config.dropout if self.training else 0.0
        # query head h attends with key/value head h // (H / Hkv), without repeating k or v
        y = F.scaled_dot_product_attention(q, k, v, causal=True, dropout_p=p)  # (B, H, T, D)
        y = y.swapaxes(1, 2).reshape(B, T, H * D)                # heads side by side again
        return F.dropout(self.c_proj(y), p, self.training)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        C, hidden = config.n_embd, config.mlp_hidden
        self.c_fc = nn.Linear(C, hidden, bias=config.bias)
        if config.mlp == "swiglu":
            self.c_gate = nn.Linear(C, hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, C, bias=config.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.config.mlp == "swiglu":
            h = F.silu(self.c_gate(x)) * self.c_fc(x)
        else:
            h = F.gelu(self.c_fc(x), approximate="tanh")
        return F.dropout(self.c_proj(h), self.config.dropout, self.training)


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = _norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = _norm(config)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, rope: tuple | None = None, cache: "KVCache | None" = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), rope, cache)
        return x + self.mlp(self.ln_2(x))


class KVCache:
    """Keys and values of the positions seen so far, for one layer: the n_kv_head
    heads that attention reads, so grouped-query attention caches G times less.

    Its arrays grow by doubling (up to block_size positions), so appending one
    token copies one position (amortised), and a model with a long context
    does not reserve all of it up front.
    """

    def __init__(self, batch: int, config: GPTConfig, dtype: Any, xp: Any):
        shape = (batch, config.kv_heads, 0, config.head_size)
        self.k = xp.zeros(shape, dtype=dtype)
        self.v = xp.zeros(shape, dtype=dtype)
        self.limit = config.block_size
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            capacity = min(self.limit, max(end, 2 * self.k.shape[2]))
            self.k, self.v = _grown(self.k, capacity), _grown(self.v, capacity)
        self.k[:, :, self.length:end] = k.data
        self.v[:, :, self.length:end] = v.data
        self.length = end
        return Tensor(self.k[:, :, :end]), Tensor(self.v[:, :, :end])


def _grown(a: Any, positions: int) -> Any:
    """a (B, H, T, D) copied into a zeroed array with room for `positions` positions."""
    bigger = get_array_module(a).zeros(a.shape[:2] + (positions,) + a.shape[3:], dtype=a.dtype)
    bigger[:, :, :a.shape[2]] = a
    return bigger


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.pos == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = _norm(config)
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # else the LM head shares wte's matrix (weight tying), so it has no parameter of its own
        if config.pos == "rope":
            # buffers, so they follow .to(device, dtype); not saved, since the config rebuilds them
            cos, sin = rope_tables(config.head_size, config.block_size, config.rope_base, scaling=config.rope_scaling)
            self.register_buffer("rope_cos", cos, persistent=False)   # (block_size, head_size / 2)
            self.register_buffer("rope_sin", sin, persistent=False)
        if not nn.init_skipped():          # inside nn.skip_init() the weights are loaded next
            self.init_weights()

    def init_weights(self) -> None:
        """GPT-2's initialisation: every matrix N(0, 0.02), biases 0, norms 1, and
        the projections that write into the residual stream (attn.c_proj,
        mlp.c_proj) scaled by 1/sqrt(2 n_layer), since 2 n_layer of them add up there."""
        rng = generator()
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                values = rng.normal(0.0, residual_std, p.shape)
            elif p.ndim == 2:
                values = rng.normal(0.0, 0.02, p.shape)
            elif name.endswith("bias"):
                values = np.zeros(p.shape)
            else:
                values = np.ones(p.shape)
            p.data[...] = get_array_module(p.data).asarray(values.astype(p.dtype))

    def to(self, device: str | None = None, dtype: Any = None) -> "GPT":
        super().to(device, dtype)
        if dtype is not None and self.config.pos == "rope":
            # the rotary tables computed again in the new dtype rather than cast from float32,
            # so a float64 model gets float64's precision
            cfg, where = self.config, self.rope_cos.device
            cos, sin = rope_tables(cfg.head_size, cfg.block_size, cfg.rope_base, dtype=np.dtype(dtype),
                                   scaling=cfg.rope_scaling)
            self.rope_cos.data, self.rope_sin.data = to_device(cos, where), to_device(sin, where)
        return self

    # ---- forward -----------------------------------------------------------
    def hidden_states(self, idx: Any, caches: list[KVCache] | None = None) -> Tensor:
        """The residual stream after the last block, (B, T, C), before the final
        norm: what every head reads (the LM head here, a classifier's elsewhere)."""
        idx = self._check_ids(idx)
        B, T = idx.shape
        start = caches[0].length if caches else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens is longer than block_size {self.config.block_size}: "
                "crop the input to the last block_size tokens"
            )
        x = self.wte(idx)                                                 # (B, T, C)
        if self.config.pos == "learned":
            xp = get_array_module(idx)
            x = x + self.wpe(xp.arange(start, start + T))                  # + (T, C), broadcast over B
        rope = None
        if self.config.pos == "rope":
            rope = (self.rope_cos.data[start:start + T], self.rope_sin.data[start:start + T])  # (T, D/2) each
        x = self.drop(x)
        for i, block in enumerate(self.h):
            x = block(x, rope, caches[i] if caches else None)
        return x

    def forward(self, idx: Any, targets: Any = None, caches: list[KVCache] | None = None, last_only: bool = False,
                reduction: str = "mean"):
        """Logits (B, T, V) for token ids (B, T); with `targets` (B, T), (logits, loss):
        the mean over the targets that are not F.IGNORE_INDEX, or their sum with
        reduction="sum" (what a data-parallel step adds up across processes).

        last_only=True computes the logits of the last position only, (B, 1, V):
        all that sampling needs, and at a large vocabulary most of the work.
        """
        x = self.hidden_states(idx, caches)                               # (B, T, C)
        B, T = x.shape[:2]
        if last_only:
            x = x[:, -1:]                                                 # (B, 1, C)
        logits = self.logits(x)                                           # (B, T, V)
        if targets is None:
            return logits
        targets = self._check_ids(targets, allow_ignore=True)
        loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), reduction=reduction)
        return logits, loss

    def logits(self, x: Tensor) -> Tensor:
        """The final norm and the LM head: hidden states (..., C) -> logits (..., V). Apart
        from forward, so a scorer can pay for the head at only the positions it scores."""
        head = self.wte.weight if self.config.tie_embeddings else self.lm_head.weight
        return F.linear(self.ln_f(x), head)

    def _check_ids(self, ids: Any, allow_ignore: bool = False) -> Any:
        data = ids.data if isinstance(ids, Tensor) else ids
        xp = get_array_module(data)
        data = xp.asarray(data)
        if data.ndim == 1:
            data = data[None, :]
        if data.ndim != 2:
            raise ValueError(f"token ids must have shape (B, T), got {data.shape}")
        if data.shape[1] == 0:
            raise ValueError("the token ids are empty: give at least one token per row (to start a document, "
                             "the id of <|endoftext|>)")
        if data.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got dtype {data.dtype}")
        if data.size:
            lo, hi = int(data.min()), int(data.max())
            if hi >= self.config.vocab_size or (lo < 0 and not (allow_ignore and lo == F.IGNORE_INDEX)):
                bad = hi if hi >= self.config.vocab_size else lo
                raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.config.vocab_size})")
        return to_device(data, self.wte.weight.device)

    # ---- accounting --------------------------------------------------------
    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = super().num_parameters()
        if exclude_embeddings and self.config.pos == "learned":
            n -= self.wpe.weight.size
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token, forward + backward: 6 per weight of every
        matmul (the head included, position embeddings not), plus the attention
        scores and weighted sum of every query head: 12 * n_layer * n_head * head_size * T
        (PaLM, appendix B, where n_head * head_size = n_embd)."""
        cfg = self.config
        T = seq_len or cfg.block_size
        n_matmul = self.num_parameters(exclude_embeddings=True)
        return 6 * n_matmul + 12 * cfg.n_layer * cfg.n_head * cfg.head_size * T

    # ---- generation --------------------------------------------------------
    def new_caches(self, batch: int) -> list[KVCache]:
        xp = get_array_module(self.wte.weight.data)
        return [KVCache(batch, self.config, self.wte.weight.dtype, xp) for _ in range(self.config.n_layer)]

    def stream(self, idx: Any, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, eos_id: int | list[int] | None = None, seed: int | None = None,
               use_cache: bool = True) -> Iterator[np.ndarray]:
        """Yield the next token ids (B,) one step at a time (see `generate`)."""
        check_sampling(temperature, top_k, top_p)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens!r}")
        idx = np.array(to_device(self._check_ids(idx), "cpu"))
        rng = np.random.default_rng(seed) if seed is not None else generator()
        with self.evaluating():
            with tt.no_grad():
                caches = None
                for _ in range(max_new_tokens):
                    if not use_cache:
                        logits = self(idx[:, -self.config.block_size:], last_only=True)
                    elif caches is None or idx.shape[1] > self.config.block_size:
                        # fill the cache from the whole window: at the start, and at every step
                        # once the context passes block_size (positions shift, cached keys go stale)
                        caches = self.new_caches(idx.shape[0])
                        logits = self(idx[:, -self.config.block_size:], caches=caches, last_only=True)
                    else:
                        logits = self(idx[:, -1:], caches=caches, last_only=True)  # only the newest token
                    last = to_device(logits.data[:, -1, :], "cpu").astype(np.float64)    # (B, V)
                    nxt = sample_next(last, temperature, top_k, top_p, rng)      # (B,)
                    idx = np.concatenate([idx, nxt[:, None]], axis=1)
                    yield nxt
                    if eos_id is not None and bool(np.all(np.isin(nxt, eos_id))):
                        return

    def generate(self, idx: Any, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, eos_id: int | list[int] | None = None, seed: int | None = None,
                 use_cache: bool = True) -> np.ndarray:
        """Continue idx (B, T) by up to max_new_tokens tokens; returns (B, T + new).

        temperature=0 is greedy. top_k keeps the k likeliest tokens, top_p the
        smallest set whose probability reaches p. Stops early once every row has
        produced eos_id (or one of a list of ids). With the KV cache each new token costs one position;
        past block_size the context is cropped to the last block_size tokens.
        """
        prompt = np.array(to_device(self._check_ids(idx), "cpu"))
        new = [t[:, None] for t in self.stream(prompt, max_new_tokens, temperature, top_k, top_p, eos_id, seed, use_cache)]
        return np.concatenate([prompt] + new, axis=1)

    # ---- folders on disk ----------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: Any) -> "GPT":
        """A GPT with the weights of a Hugging Face folder (GPT-2, Llama, Qwen2, Qwen3:
        config.json + model.safetensors or its shards) or one of our own (a checkpoint
        or an instruction fine-tune; their checksums are verified). `overrides` may
        change training-only settings such as dropout, or shorten block_size."""
        config, state = read_pretrained(path, **overrides)
        with nn.skip_init():           # no random weights drawn only to be overwritten
            model = cls(config)
        model.load_state_dict(state)   # copies into the model's own float32 arrays
        return model

    def save_pretrained(self, path: str | Path) -> None:
        """Write a Hugging Face folder of the model's family (GPT-2, Llama, Qwen2 or Qwen3)
        that from_pretrained and transformers open; an architecture that no Hugging Face
        model has is a ValueError naming the options."""
        write_hf(self.config, self.state_dict(), path)

