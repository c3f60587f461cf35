"""Every fused op, composed from primitives: the textbook version.

Each function computes what its fused twin computes (in functional.py, or in
gpt/rope.py and gpt/lora.py for the two GPT-only ops), written with the Tensor
operators and methods of ops.py only. Its gradient therefore comes from the
chain rule through a graph of small nodes, never from a hand-derived formula:
this is the op; the fused `...Function` class is how it is made fast (one
node, fewer saved arrays, fewer passes over memory). The tests check each
fused op against its reference here, values and gradients; bench/ops.py times
the two against each other; docs/ derives the step from one to the other.

Short and slow on purpose: every intermediate is a node that saves its
inputs. GELU's exact (erf) form has no reference, since no primitive computes
erf. Masks (`attn_mask`, dropout's `keep`) are arrays, not tensors.

At the end, `backward`: the engine's walk in the same spirit, the idea
without the policy; the tests check that Tensor.backward agrees with it.
"""
from __future__ import annotations

import math
from typing import Any

from .backend import get_array_module
from .functional import IGNORE_INDEX
from .ops import concatenate
from .tensor import Tensor, _data


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """e^x / sum e^x. The max is subtracted for stability only: a constant shift
    cancels in the ratio, so it is detached (no gradient flows through it)."""
    e = (x - x.max(axis=axis, keepdims=True).detach()).exp()
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """x - log sum e^x, with the same detached shift."""
    z = x - x.max(axis=axis, keepdims=True).detach()
    return z - z.exp().sum(axis=axis, keepdims=True).log()


def cross_entropy(logits: Tensor, targets: Any, ignore_index: int = IGNORE_INDEX, reduction: str = "mean") -> Tensor:
    """-log softmax(logits)[target] per row; rows whose target is ignore_index count
    as 0 and, for "mean", are left out of the count."""
    xp = get_array_module(logits.data)
    t = xp.asarray(_data(targets))
    kept = t.reshape(-1) != ignore_index                              # (N,)
    logp = log_softmax(logits.reshape(-1, logits.shape[-1]))          # (N, V)
    picked = logp[xp.arange(kept.size), xp.where(kept, t.reshape(-1), 0)]  # (N,) log p of each target
    losses = -picked * kept
    if reduction == "none":
        return losses.reshape(t.shape)
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / max(int(kept.sum()), 1)


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis."""
    xc = x - x.mean(axis=-1, keepdims=True)
    y = xc / ((xc * xc).mean(axis=-1, keepdims=True) + eps).sqrt()
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def rms_norm(x: Tensor, weight: Tensor | None, eps: float = 1e-5) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis."""
    y = x / ((x * x).mean(axis=-1, keepdims=True) + eps).sqrt()
    return y * weight if weight is not None else y


def gelu(x: Tensor) -> Tensor:
    """GELU's tanh form (GPT-2's): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1 + ((x + 0.044715 * x ** 3) * math.sqrt(2 / math.pi)).tanh())


def silu(x: Tensor) -> Tensor:
    """x sigma(x) = x / (1 + e^-x)."""
    return x / (1 + (-x).exp())


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x W^T + b; the matmul broadcasts W over x's leading axes."""
    y = x @ weight.T
    return y + bias if bias is not None else y


def embedding(ids: Any, weight: Tensor) -> Tensor:
    """Row ids of weight; an integer-array index, whose backward scatter-adds."""
    return weight[_data(ids)]


def dropout(x: Tensor, p: float, keep: Any) -> Tensor:
    """Inverted dropout with a given boolean mask: x * keep / (1 - p)."""
    return x * (keep / (1 - p))


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = True, attn_mask: Any = None,
                                 dropout_p: float = 0.0, scale: float | None = None, keep: Any = None) -> Tensor:
    """softmax(q k^T * scale + mask) @ v, the causal mask aligned bottom-right;
    `keep` is the dropout mask on the probabilities (None: no dropout). A row
    with every key masked gives NaN here (0 / 0); the fused op gives 0.

    Grouped queries (k and v with Hkv heads, q with H = Hkv * G): each key/value
    head is repeated for the G query heads that read it, by an integer-array
    index, whose backward scatter-adds: the G gradients of a shared head are summed."""
    tq, tk = q.shape[-2], k.shape[-2]
    xp = get_array_module(q.data)
    if q.ndim > 2 and k.shape[-3] != q.shape[-3]:
        heads = xp.arange(q.shape[-3]) // (q.shape[-3] // k.shape[-3])  # query head h reads kv head h // G
        k, v = k[..., heads, :, :], v[..., heads, :, :]               # (..., H, Tk, D)
    s = (q @ k.swapaxes(-1, -2)) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)  # (..., Tq, Tk)
    if causal:
        s = s.masked_fill(xp.triu(xp.ones((tq, tk), dtype=bool), k=tk - tq + 1), -math.inf)
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == bool else s + attn_mask
    p = softmax(s)
    if keep is not None:
        p = dropout(p, dropout_p, keep)
    return p @ v                                                      # (..., Tq, Dv)


def rotary(x: Tensor, cos: Any, sin: Any) -> Tensor:
    """Rotate the pairs (x[i], x[i + D/2]) of x (..., T, D) by the angles whose
    cos and sin are given, each (T, D/2): gpt/rope.py's Rotary."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def lora_linear(x: Tensor, a: Tensor, b_up: Tensor, weight: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    """x W^T + b + scale (x A^T) B^T: gpt/lora.py's LoRALinearFunction."""
    return linear(x, weight, bias) + scale * ((x @ a.T) @ b_up.T)


# ---- the walk --------------------------------------------------------------------------
def backward(loss: Tensor) -> None:
    """Tensor.backward as micrograd writes it: list the nodes so that each comes
    after the nodes that make its inputs, run their backwards in reverse, and
    add each gradient to what its tensor has so far (a leaf's in .grad).
    tensor.py's _walk computes the same gradients; its extra lines (freeing
    buffers on the way, sums in place, gradient slots, an explicit stack for
    deep graphs) are policy, not the idea. Keeps the graph."""
    order: list[Any] = []
    seen: set[Any] = set()

    def visit(node: Any) -> None:                 # depth-first: a node after its inputs' nodes
        if node is not None and node not in seen:
            seen.add(node)
            for t in node.inputs:
                if t is not None and t.requires_grad:
                    visit(t._ctx)
            order.append(node)

    grads: dict[tuple[Any, int], Any] = {}        # (node, which output) -> dL/d(that output) so far

    def add(t: Tensor, g: Any) -> None:           # fan-out adds: every use of t sends its part
        if t._ctx is None:
            t.grad = g.copy() if t.grad is None else t.grad + g
        else:
            key = (t._ctx, t._index)
            grads[key] = grads[key] + g if key in grads else g

    add(loss, get_array_module(loss.data).ones_like(loss.data))   # dL/dL = 1
    visit(loss._ctx)
    for node in reversed(order):
        g = [grads.get((node, i)) for i in range(node.n_outputs)] if node.multi_output else grads.get((node, 0))
        if g is None:
            continue                              # no gradient reached this node
        in_grads = node.backward(g)
        for t, dt in zip(node.inputs, in_grads if type(in_grads) is tuple else (in_grads,)):
            if dt is not None and t.requires_grad:
                add(t, dt)


def dpo_loss(chosen: Tensor, rejected: Tensor, ref_chosen: Any, ref_rejected: Any, beta: float = 0.1,
             reduction: str = "mean") -> Tensor:
    """-log sigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected))): functional.py's
    DPOLossFunction. -log sigmoid(z) = log(1 + e^-z), written relu(-z) + log(1 + e^-|z|) so no
    exponential overflows (|z| = relu(z) + relu(-z))."""
    z = ((chosen - _data(ref_chosen)) - (rejected - _data(ref_rejected))) * beta
    losses = (-z).relu() + ((-(z.relu() + (-z).relu())).exp() + 1.0).log()
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()
