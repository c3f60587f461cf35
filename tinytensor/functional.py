"""Fused operations: each one a single graph node with a hand-derived backward.

A GPT could be written entirely with the primitives in `ops.py`: softmax is
`exp(x - max) / sum(exp(x - max))`, attention is a matmul, a mask, a softmax
and another matmul. That works, but every primitive saves its own inputs and
allocates its own outputs, so a composed softmax keeps four full-size arrays
alive for backward and walks memory a dozen times. Here each op is one
`Function` whose backward is derived on paper and written beside its forward,
the math quoted in a comment (llm.c style), so the gradient never falls back
to a chain of primitives:

  - softmax / log_softmax / cross_entropy subtract the row max and go through
    log-sum-exp, so they stay finite for logits like [1000, 0, -1000];
    cross_entropy's forward exponentiates one cache-sized row block at a time
    and makes its gradient there (softmax - onehot), saved instead of the logits;
  - layer_norm saves its input and two per-row statistics (mean, 1/std) and
    rebuilds the normalised x in backward; rms_norm saves the normalised x
    and 1/rms; both use the closed-form gradient;
  - scaled_dot_product_attention saves the attention probabilities of each
    block of query rows (plus a boolean dropout mask); its backward allocates
    one (B, H, rows, keys) array per block for the score gradient, and never
    a second full (B, H, Tq, Tk) array, thanks to the rowsum identity; with
    grouped queries (fewer key/value heads than query heads) the shared heads
    are broadcast, never repeated;
  - gelu (tanh form) is x sigmoid(2u), one exp instead of a tanh, and saves
    sigmoid(2u) so that its backward needs no exponential at all;
  - embedding scatter-adds rows by sorting the ids (repeated ids accumulate);
  - linear flattens the leading axes so each gradient is a single matmul;
  - linear and embedding put a parameter's gradient straight into its .grad
    (or its slot in an optimizer's flat buffer; see gradbuffer.py), so
    no (out, in) or (V, C) array is made only to be copied or added there.

Each fused op's `Function` class is named with a `Function` suffix
(`LayerNormFunction`), so it never shares a name with the `nn` layer that
calls it (`nn.LayerNorm`). The same math composed from primitives, short and
slow, is in `reference.py`; docs/ derives every backward here step by step.

Shapes in comments: B batch, H heads, T (Tq, Tk) sequence lengths, D head
size, C channels, V vocabulary size, N = product of the leading axes; in
grouped-query attention Hkv key/value heads, each read by G = H / Hkv query heads.
Forwards work in place on buffers they own (`xp.exp(p, out=p)`) and keep the
input dtype: constants are Python floats, which never promote float32 to
float64. Device-agnostic: `xp` is NumPy or CuPy, whichever holds the data.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from . import ops
from .backend import device_of, get_array_module, to_device
from .gradbuffer import slot_for
from .random import generator
from .tensor import Function, Tensor, _data

__all__ = [
    "IGNORE_INDEX", "cross_entropy", "dropout", "embedding", "gelu", "layer_norm", "linear", "log_softmax", "relu",
    "rms_norm", "scaled_dot_product_attention", "silu", "softmax", "tanh",
]

# the target id that cross_entropy skips (PyTorch's value): padding, prompt tokens not learned
IGNORE_INDEX = -100

# log-sum-exp style loops work through (N, V) arrays in row blocks of about
# this many elements (256 KiB of float32), so a chain of elementwise steps on
# one block runs in cache and temporaries stay block-sized
_BLOCK = 1 << 16

# causal attention works through its query rows in up to this many blocks of at
# least this many rows each, skipping the scores above the diagonal (see _causal_chunks)
_ATTENTION_BLOCKS = 8
_ATTENTION_MIN_ROWS = 32
# ... and each block's softmax in slices of the batch of about this many scores
# (4 MiB of float32): a slice stays in cache through its steps (about 30% faster)
_ATTENTION_SCORES = 1 << 20


# ---- helpers -------------------------------------------------------------------
def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _same_device(name: str, *tensors: Tensor | None) -> None:
    if "cupy" not in sys.modules:
        return                                           # no CuPy, so every array is a NumPy array
    devices = {t.device for t in tensors if t is not None}
    if len(devices) > 1:
        raise RuntimeError(f"{name}: inputs live on different devices {sorted(devices)}; move them with .to()")


def _array(x: Any) -> Any:
    """A constant (a Tensor, array or list) as an array, where it lives: a list becomes a NumPy array."""
    arr = _data(x)
    return np.asarray(arr) if get_array_module(arr) is np else arr


def _int_array(x: Any, name: str, device: str) -> Any:
    """Integer ids/targets as an array on `device` (from a Tensor, array or list)."""
    arr = _array(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return to_device(arr, device)


def _out_of_range(ids: Any, n: int) -> int | None:
    """An id of the integer array outside 0..n-1 (its min or its max), or None."""
    if ids.size == 0:
        return None
    lo, hi = int(ids.min()), int(ids.max())
    return lo if lo < 0 else hi if hi >= n else None


def _row_blocks(n_rows: int, row_len: int, xp: Any) -> list[slice]:
    """Row slices of about _BLOCK elements on the CPU; on a GPU one slice of
    all rows (a kernel launch per block would cost more than it saves)."""
    step = max(1, n_rows) if xp is not np else max(1, _BLOCK // max(row_len, 1))
    return [slice(start, start + step) for start in range(0, n_rows, step)]


def _sum_last(a: Any, b: Any = None) -> Any:
    """sum over the last axis of a (or of a * b), keepdims. einsum does it in one
    pass with no temporary, about 3x faster than .sum(axis=-1) on short rows
    (it adds in plain order, not pairwise: fine for rows of a model's width)."""
    xp = get_array_module(a)
    s = xp.einsum("...c->...", a) if b is None else xp.einsum("...c,...c->...", a, b)
    return s[..., None]


def _keep_scale(p: float) -> float:
    """Inverted dropout's factor for the kept values, 1 / (1 - p), so the mean is unchanged (p = 1 keeps nothing)."""
    return 1.0 / (1.0 - p) if p < 1 else 0.0


def _keep_mask(shape: tuple[int, ...], p: float, device: str) -> Any:
    """Boolean mask, True with probability 1 - p, drawn on the CPU from the
    seeded generator (so a seed gives the same mask on every device). Each
    element is 16 random bits compared with round(p * 2^16): about twice as
    fast as a float32 uniform, and the drop rate is p to within 2^-17."""
    bits = generator().integers(0, 1 << 16, size=shape, dtype=np.uint16)
    return to_device(bits >= np.uint32(round(p * (1 << 16))), device)


def _dropped(p: Any, keep: Any, dropout_p: float) -> Any:
    """p * keep / (1 - dropout_p) as a new array: inverted dropout with a given boolean mask."""
    pd = get_array_module(p).multiply(p, keep)
    pd *= _keep_scale(dropout_p)
    return pd


# ---- softmax ---------------------------------------------------------------------
class SoftmaxFunction(Function):
    """Derived in docs/softmax.md; twin: reference.softmax."""

    def forward(self, x, axis):
        xp = get_array_module(x)
        z = x - x.max(axis=axis, keepdims=True)        # shift by the max m: e^(x - m) <= 1, no overflow
        e = xp.exp(z, out=z)                             # e^(x - m)           (in z's buffer)
        total = _sum_last(e) if axis in (-1, e.ndim - 1) else e.sum(axis=axis, keepdims=True)
        y = xp.multiply(e, 1.0 / total, out=e)           # y = e / sum e   (the max gives e^0 = 1, so sum >= 1)
        self.y, self.axis = y, axis
        return y

    def backward(self, g):
        # y_i = e^x_i / sum_j e^x_j, Jacobian dy_i/dx_k = y_i (delta_ik - y_k):
        #   dx_k = sum_i g_i y_i (delta_ik - y_k) = y_k * (g_k - sum_i g_i y_i)
        xp = get_array_module(g)
        y = self.y
        dot = _sum_last(g, y) if self.axis in (-1, y.ndim - 1) else (g * y).sum(axis=self.axis, keepdims=True)
        g_minus_dot = g - dot                            # g - sum_i g_i y_i
        return xp.multiply(g_minus_dot, y, out=g_minus_dot)


class LogSoftmaxFunction(Function):
    """Derived in docs/softmax.md; twin: reference.log_softmax."""

    def forward(self, x, axis):
        xp = get_array_module(x)
        xl = xp.moveaxis(x, axis, -1)                    # softmax axis last (a view; copied below if needed)
        x2 = xl.reshape(-1, xl.shape[-1])                # (N, V)
        y = xp.empty_like(x2)                            # (N, V)
        blocks = _row_blocks(*x2.shape, xp)
        buf = xp.empty((min(blocks[0].stop, x2.shape[0]) if blocks else 0, x2.shape[1]), dtype=x2.dtype)  # (r, V)
        for rows in blocks:                              # each block's steps run in cache
            block = x2[rows]                             # (r, V)
            e = xp.subtract(block, block.max(axis=1, keepdims=True), out=y[rows])  # x - m
            total = xp.exp(e, out=buf[:len(e)]).sum(axis=1, keepdims=True)
            e -= xp.log(total)                           # y = x - m - log sum e^(x - m) = x - lse(x)
        # only the output is saved (it is kept alive by its consumer anyway): backward
        # gets softmax(x) back as e^y, so no second (N, V) array lives between the passes
        self.y, self.axis = y, axis
        return xp.moveaxis(y.reshape(xl.shape), -1, axis)

    def backward(self, g):
        # y_i = x_i - lse(x): dx_i = g_i - softmax(x)_i * sum_j g_j, and softmax(x) = e^y
        xp = get_array_module(g)
        gl = xp.moveaxis(g, self.axis, -1)
        g2 = gl.reshape(self.y.shape)                    # (N, V)
        dx = xp.empty_like(self.y)                       # (N, V)
        for rows in _row_blocks(*dx.shape, xp):          # each block's steps run in cache
            p = xp.exp(self.y[rows], out=dx[rows])       # softmax(x) = e^y   (in dx's rows)
            dx_rows = xp.multiply(p, -g2[rows].sum(axis=1, keepdims=True), out=p)
            dx_rows += g2[rows]                          # dx = g - softmax * sum g
        return xp.moveaxis(dx.reshape(gl.shape), -1, self.axis)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """e^x / sum e^x along `axis`, shifted by the max so it never overflows."""
    return SoftmaxFunction.apply(_as_tensor(x), axis=axis)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """x - logsumexp(x) along `axis`, through the max-shifted log-sum-exp."""
    return LogSoftmaxFunction.apply(_as_tensor(x), axis=axis)


# ---- cross-entropy -----------------------------------------------------------------
class CrossEntropyFunction(Function):
    """Derived in docs/softmax.md; twin: reference.cross_entropy."""

    def forward(self, logits, targets, valid, count, reduction):
        xp = get_array_module(logits)
        x = logits.reshape(-1, logits.shape[-1])         # (N, V)
        t = targets.reshape(-1)                          # (N,)
        n, v = x.shape
        idx = xp.nonzero(valid)[0]                       # (n_valid,) rows whose target is not ignored
        # The gradient is made here, while each block's softmax is in cache (backward would
        # exponentiate all N V logits again): dx = w (softmax - onehot) per unit of upstream
        # gradient, w_n = 1 / count ("mean") or 1 on a kept row, 0 on an ignored one.
        # Saved instead of the logits; the peak memory is the same as when backward made it.
        w = valid.astype(x.dtype)                        # (N,)
        if reduction == "mean":
            w *= 1.0 / max(count, 1)
        dx = xp.empty_like(x) if self.needs_grad[0] else None  # (N, V)
        blocks = _row_blocks(n, v, xp)
        scratch = None if dx is not None else xp.empty((min(blocks[0].stop, n) if n else 0, v), dtype=x.dtype)
        lse = xp.empty(n, dtype=x.dtype)                 # (N,) log sum_j e^(x_nj)
        for rows in blocks:                              # each block's steps run in cache
            block = x[rows]                              # (r, V)
            m = block.max(axis=1, keepdims=True)         # (r, 1) shift by the max: e^(x - m) <= 1, no overflow
            e = xp.subtract(block, m, out=dx[rows] if dx is not None else scratch[:len(block)])
            sums = xp.exp(e, out=e).sum(axis=1)          # (r,) sum_j e^(x_j - m) >= 1
            lse[rows] = xp.log(sums) + m[:, 0]           # lse = m + log sum_j e^(x_j - m)
            if dx is not None:
                e *= (w[rows] / sums)[:, None]           # w softmax = w e^(x - m) / sum_j e^(x_j - m)
        if dx is not None:
            dx[idx, t[idx]] -= w[idx]                    # w (softmax - onehot)
        # loss_n = lse_n - x[n, t_n] on rows whose target is not ignored, 0 elsewhere
        losses = xp.zeros(n, dtype=x.dtype)              # (N,)
        losses[idx] = lse[idx] - x[idx, t[idx]]
        self.dx, self.reduction, self.in_shape = dx, reduction, logits.shape
        if reduction == "none":
            return losses.reshape(targets.shape)         # (B, T) or (N,)
        total = losses.sum()
        if reduction == "sum":
            return total
        return total / max(count, 1)                     # all ignored: 0 (PyTorch gives nan)

    def backward(self, g):
        # loss_n = lse(x_n) - x[n, t_n]: dx_n = g_n (softmax(x_n) - onehot(t_n)) on each kept row,
        # over the count for "mean": the forward's dx times the upstream gradient g
        if self.reduction == "none":
            return (self.dx * g.reshape(-1, 1)).reshape(self.in_shape)  # one g per row
        # loss.backward() itself has nothing to scale: a view, which the engine never writes
        # into (checked on the host only: on a GPU, float(g) would wait for the device)
        if get_array_module(g) is np and float(g) == 1.0:
            return self.dx.reshape(self.in_shape)
        return (self.dx * g).reshape(self.in_shape)


def cross_entropy(logits: Tensor, targets: Any, ignore_index: int = IGNORE_INDEX, reduction: str = "mean") -> Tensor:
    """Mean (or sum, or per-position) of -log softmax(logits)[target].

    logits (N, V) with targets (N,), or (B, T, V) with (B, T): any leading
    shape, vocabulary on the last axis. Positions whose target equals
    `ignore_index` contribute no loss and get a zero gradient; "mean" divides
    by the number of the others. If every target is ignored, "mean" gives a
    loss of 0 and a zero gradient (PyTorch gives nan).
    """
    logits = _as_tensor(logits)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    t = _int_array(targets, "cross_entropy targets", logits.device)
    if logits.ndim < 1 or logits.shape[:-1] != t.shape:
        raise ValueError(
            f"cross_entropy: logits of shape {logits.shape} need targets of shape {logits.shape[:-1]} "
            f"(one per row, vocabulary on the last axis), got targets of shape {t.shape}"
        )
    vocab = logits.shape[-1]
    valid = (t != ignore_index).reshape(-1)              # (N,)
    kept = t.reshape(-1)[valid]
    bad = _out_of_range(kept, vocab)
    if bad is not None:
        raise IndexError(
            f"cross_entropy: target {bad} is out of range for {vocab} classes "
            f"(valid targets are 0..{vocab - 1}, or ignore_index={ignore_index})"
        )
    return CrossEntropyFunction.apply(logits, targets=t, valid=valid, count=kept.size, reduction=reduction)


# ---- normalisation -------------------------------------------------------------------
class LayerNormFunction(Function):
    """Derived in docs/normalization.md; twin: reference.layer_norm."""

    def forward(self, x, w, b, eps):
        xp = get_array_module(x)
        x2 = x.reshape(-1, x.shape[-1])                  # (N, C)
        mean = _sum_last(x2) / x2.shape[1]               # (N, 1)
        xc = x2 - mean                                   # (N, C) x - mean
        var = _sum_last(xc, xc) / x2.shape[1]            # (N, 1) biased variance
        rstd = 1.0 / xp.sqrt(var + eps)                  # (N, 1)
        xhat = xp.multiply(xc, rstd, out=xc)             # xhat = (x - mean) * rstd   (in xc's buffer)
        y = xhat                                         # y = xhat * w + b           (in xhat's buffer)
        if w is not None:
            y *= w
        if b is not None:
            y += b
        # saved: x and the two (N, 1) statistics; backward rebuilds xhat from them
        self.x2, self.mean, self.rstd, self.w, self.in_shape = x2, mean, rstd, w, x.shape
        return y.reshape(x.shape)

    def backward(self, g):
        # g = dy, rows of C channels (docs/normalization.md derives the dx line)
        xp = get_array_module(g)
        w, needs = self.w, self.needs_grad
        g2 = g.reshape(-1, g.shape[-1])                  # (N, C)
        c = g2.shape[1]
        xhat = self.x2 - self.mean                       # (N, C) recomputed from the saved statistics
        xhat *= self.rstd
        # y = xhat * w + b  ->  dw = sum_N g * xhat,  db = sum_N g,  dxhat = g * w
        dw = xp.einsum("nc,nc->c", g2, xhat) if needs[1] else None  # (C,)
        db = g2.sum(axis=0) if needs[2] else None        # (C,)
        dx = None
        if needs[0]:
            dxhat = g2 * w if w is not None else g2.copy()  # (N, C)
            # xhat = (x - mean) * rstd, through mean and rstd too:
            #   dx = rstd * (dxhat - mean_C(dxhat) - xhat * mean_C(dxhat * xhat))
            mean_dxhat = _sum_last(dxhat) / c            # (N, 1)
            mean_dxhat_xhat = _sum_last(dxhat, xhat) / c  # (N, 1)
            dx = xp.subtract(dxhat, mean_dxhat, out=dxhat)  # (in dxhat's buffer)
            dx -= xhat * mean_dxhat_xhat
            dx *= self.rstd
            dx = dx.reshape(self.in_shape)
        return dx, dw, db


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis; weight
    and bias may be None."""
    x = _as_tensor(x)
    c = x.shape[-1:]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != c:
            raise ValueError(f"layer_norm: {name} of shape {p.shape} does not match x of shape {x.shape} "
                             f"(it needs shape {c})")
    _same_device("layer_norm", x, weight, bias)
    return LayerNormFunction.apply(x, weight, bias, eps=eps)


class RMSNormFunction(Function):
    """Derived in docs/normalization.md; twin: reference.rms_norm."""

    def forward(self, x, w, eps):
        xp = get_array_module(x)
        x2 = x.reshape(-1, x.shape[-1])                  # (N, C)
        rstd = 1.0 / xp.sqrt(_sum_last(x2, x2) / x2.shape[1] + eps)  # (N, 1)
        xhat = x2 * rstd                                 # xhat = x * rstd
        y = xhat * w if w is not None else xhat          # y = xhat * w
        self.xhat, self.rstd, self.w, self.in_shape = xhat, rstd, w, x.shape
        return y.reshape(x.shape)

    def backward(self, g):
        # g = dy, rows of C channels (docs/normalization.md derives the dx line)
        xp = get_array_module(g)
        w, xhat = self.w, self.xhat
        g2 = g.reshape(-1, g.shape[-1])                  # (N, C)
        # y = xhat * w  ->  dw = sum_N g * xhat,  dxhat = g * w
        dw = xp.einsum("nc,nc->c", g2, xhat) if self.needs_grad[1] else None  # (C,)
        dx = None
        if self.needs_grad[0]:
            dxhat = g2 * w if w is not None else g2.copy()  # (N, C)
            # xhat = x * rstd, rstd = (mean_C(x^2) + eps)^(-1/2):
            #   dx = rstd * (dxhat - xhat * mean_C(dxhat * xhat))
            mean_dxhat_xhat = _sum_last(dxhat, xhat) / g2.shape[1]  # (N, 1)
            dx = xp.subtract(dxhat, xhat * mean_dxhat_xhat, out=dxhat)  # (in dxhat's buffer)
            dx *= self.rstd
            dx = dx.reshape(self.in_shape)
        return dx, dw


def rms_norm(x: Tensor, weight: Tensor | None, eps: float = 1e-5) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (weight may be None)."""
    x = _as_tensor(x)
    if weight is not None and weight.shape != x.shape[-1:]:
        raise ValueError(f"rms_norm: weight of shape {weight.shape} does not match x of shape {x.shape} "
                         f"(it needs shape {x.shape[-1:]})")
    _same_device("rms_norm", x, weight)
    return RMSNormFunction.apply(x, weight, eps=eps)


# ---- activations ------------------------------------------------------------------
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def _erf(x: Any) -> Any:
    """The error function elementwise (NumPy has none): SciPy on the CPU,
    cupyx on the GPU, else Python's math.erf element by element (slow)."""
    if get_array_module(x) is not np:
        from cupyx.scipy.special import erf
        return erf(x)
    try:
        from scipy.special import erf
    except ImportError:
        return np.vectorize(math.erf, otypes=[x.dtype])(x)
    return erf(x)


class GeluTanhFunction(Function):
    """Derived in docs/activations.md; twin: reference.gelu."""

    def forward(self, x):
        # 0.5 (1 + tanh u) = sigmoid(2u), so y = x sigmoid(v) with v = 2u: one exp,
        # about half the cost of a tanh in NumPy's float32 (docs/activations.md)
        xp = get_array_module(x)
        shape, x = x.shape, x.reshape(-1)               # (n,) so that 0-d inputs are arrays too
        s, y = xp.empty_like(x), xp.empty_like(x)
        # in blocks, so the chain of elementwise steps on one block runs in cache
        # (2-3x faster on the CPU than whole-array passes)
        for i in _row_blocks(x.size, 1, xp):
            xb, minus_v = x[i], s[i]
            xp.multiply(xb, xb, out=minus_v)              # -v = -2c (x + a x^3), computed as x (-2c - 2c a x^2)
            minus_v *= -2.0 * _SQRT_2_OVER_PI * _GELU_A
            minus_v -= 2.0 * _SQRT_2_OVER_PI
            minus_v *= xb
            with np.errstate(over="ignore"):             # e^(-v) = inf (v < -88 in float32) gives s = 0, its limit
                xp.exp(minus_v, out=minus_v)             # s = sigmoid(v) = 1 / (1 + e^(-v))   (in -v's buffer)
            minus_v += 1.0
            xp.reciprocal(minus_v, out=minus_v)
            xp.multiply(xb, minus_v, out=y[i])           # y = x s
        # saved: x, s (one array more than x alone, so backward needs no exp) and
        # the output, which the next op keeps alive anyway
        self.x, self.s, self.y = x, s, y
        return y.reshape(shape)

    def backward(self, g):
        # y = x s, s = sigmoid(v), v = 2c (x + a x^3), ds/dv = s (1 - s):
        #   dy/dx = s + x s (1 - s) dv/dx = s + y (1 - s) dv/dx;  dx = dy/dx * g
        xp = get_array_module(g)
        shape, g = g.shape, g.reshape(-1)               # (n,)
        dx = xp.empty_like(g)
        work = xp.empty(min(g.size, _BLOCK), dtype=g.dtype)  # one block's temporary, reused
        for i in _row_blocks(g.size, 1, xp):
            x, s, y = self.x[i], self.s[i], self.y[i]
            n = x.size
            # v = 2c (x + a x^3)
            dv_dx = xp.multiply(x, x, out=work[:n] if xp is np else None)
            dv_dx *= 6.0 * _SQRT_2_OVER_PI * _GELU_A                     # dv/dx = 2c (1 + 3 a x^2)
            dv_dx += 2.0 * _SQRT_2_OVER_PI
            # y = x s, s = sigmoid(v)
            y_one_minus_s = xp.multiply(y, s, out=dx[i])
            xp.subtract(y, y_one_minus_s, out=y_one_minus_s)             # y (1 - s) = x ds/dv   (in dx's block)
            y_one_minus_s *= dv_dx                                       # dy/dx = s + y (1 - s) dv/dx
            y_one_minus_s += s
            y_one_minus_s *= g[i]
        return dx.reshape(shape)


class GeluErfFunction(Function):
    """Derived in docs/activations.md; no reference twin (no primitive computes erf)."""

    def forward(self, x):
        xp = get_array_module(x)
        shape, x = x.shape, x.reshape(-1)               # (n,)
        cdf = _erf(x * (1.0 / math.sqrt(2.0)))           # Phi(x) = 0.5 (1 + erf(x / sqrt 2))
        cdf += 1.0
        cdf *= 0.5
        if self.needs_grad[0]:                           # the copy is real work
            self.x, self.cdf = x, cdf.copy()
        y = xp.multiply(cdf, x, out=cdf)                 # y = x Phi(x)   (in Phi's buffer)
        return y.reshape(shape)

    def backward(self, g):
        # y = x Phi(x): dy/dx = Phi(x) + x phi(x), phi(x) = e^(-x^2/2) / sqrt(2 pi); dx = dy/dx * g
        xp = get_array_module(g)
        x, shape, g = self.x, g.shape, g.reshape(-1)    # (n,)
        minus_half_x_sq = x * x
        minus_half_x_sq *= -0.5
        pdf = xp.exp(minus_half_x_sq, out=minus_half_x_sq)  # phi(x)         (in its argument's buffer)
        pdf *= 1.0 / math.sqrt(2.0 * math.pi)
        dy_dx = xp.multiply(pdf, x, out=pdf)             # Phi + x phi      (in phi's buffer)
        dy_dx += self.cdf
        dx = xp.multiply(dy_dx, g, out=dy_dx)
        return dx.reshape(shape)


def gelu(x: Tensor, approximate: str = "tanh") -> Tensor:
    """x * Phi(x); approximate="tanh" is GPT-2's 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))),
    computed as x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), the same function; "none" the exact form through erf."""
    x = _as_tensor(x)
    if approximate == "tanh":
        return GeluTanhFunction.apply(x)
    if approximate == "none":
        return GeluErfFunction.apply(x)
    raise ValueError(f"gelu: approximate must be 'tanh' or 'none', got {approximate!r}")


class SiluFunction(Function):
    """Derived in docs/activations.md; twin: reference.silu."""

    def forward(self, x):
        xp = get_array_module(x)
        shape, x = x.shape, x.reshape(-1)               # (n,)
        s = x * 0.5                                      # s = sigma(x) = 0.5 (1 + tanh(x / 2)): no overflow
        xp.tanh(s, out=s)
        s += 1.0
        s *= 0.5
        y = s * x                                        # y = x s
        # saved: s and the output, not x: backward needs no second tanh, and the
        # output is kept alive by the next op anyway, so this costs no more than saving x
        self.s, self.y = s, y
        return y.reshape(shape)

    def backward(self, g):
        # y = x s, s = sigma(x), ds/dx = s (1 - s):
        #   dy/dx = s + x s (1 - s) = s + y (1 - s)   (y saved, so x is not needed); dx = dy/dx * g
        xp = get_array_module(g)
        shape, g = g.shape, g.reshape(-1)               # (n,)
        y_s = self.y * self.s
        y_one_minus_s = xp.subtract(self.y, y_s, out=y_s)  # y (1 - s)    (in y s's buffer)
        dy_dx = xp.add(y_one_minus_s, self.s, out=y_one_minus_s)
        dx = xp.multiply(dy_dx, g, out=dy_dx)
        return dx.reshape(shape)


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x) (also called swish)."""
    return SiluFunction.apply(_as_tensor(x))


def relu(x: Tensor) -> Tensor:
    """max(x, 0); the primitive from ops.py."""
    return ops.Relu.apply(_as_tensor(x))


def tanh(x: Tensor) -> Tensor:
    """tanh(x); the primitive from ops.py."""
    return ops.Tanh.apply(_as_tensor(x))


# ---- attention --------------------------------------------------------------------
def _causal_chunks(tq: int, tk: int, causal: bool) -> list[tuple[int, int, int]]:
    """(first query, end query, end key) of each block of query rows.

    Causal query i (bottom-right aligned: at absolute position Tk - Tq + i) sees
    keys j <= Tk - Tq + i, so a block of rows [i0, i1) needs keys [0, Tk - Tq + i1)
    only: the scores above the diagonal are never computed, which skips nearly
    half the work (1 - (n + 1) / 2n of it with n blocks). Without causality, one
    block of everything. A block whose rows see no key at all is left out."""
    if not causal:
        return [(0, tq, tk)]
    n = max(1, min(_ATTENTION_BLOCKS, tq // _ATTENTION_MIN_ROWS))
    bounds = [round(tq * i / n) for i in range(n + 1)]
    return [(i0, i1, min(tk, tk - tq + i1)) for i0, i1 in zip(bounds, bounds[1:]) if tk - tq + i1 > 0]


def _batch_slices(scores: tuple[int, ...], xp: Any) -> list[slice]:
    """Slices of the first axis of a block of scores (B, ..., r, kend) holding about
    _ATTENTION_SCORES elements each on the CPU; on a GPU one slice of everything."""
    if xp is not np:
        return [slice(None)]
    per_item = math.prod(scores[1:])
    step = max(1, _ATTENTION_SCORES // max(per_item, 1))
    return [slice(start, start + step) for start in range(0, scores[0], step)]


class ScaledDotProductAttentionFunction(Function):
    """Derived in docs/attention.md; twin: reference.scaled_dot_product_attention.

    Attention with grouped queries: q has H = Hkv * G heads, k and v have Hkv, and
    query head h reads key/value head h // G (G = 1 is plain multi-head attention).

    q is viewed as (B, Hkv, G, Tq, D) against k and v viewed as (B, Hkv, 1, Tk, D):
    every matmul broadcasts a key/value head over its G query heads, so no
    repeated copy of k or v is ever made or saved."""

    def forward(self, q, k, v, mask, causal, dropout_p, scale):
        xp = get_array_module(q)
        tq, tk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
        groups = q.shape[-3] // k.shape[-3] if q.ndim > 2 else 1
        lead = k.shape[:-2] + (groups,)                  # (B, Hkv, G)
        # splitting an axis in two is a view: none of these reshapes copies
        qg = q.reshape(lead + (tq, q.shape[-1]))         # (B, Hkv, G, Tq, D)
        kg = k.reshape(lead[:-1] + (1,) + k.shape[-2:])  # (B, Hkv, 1, Tk, D)
        vg = v.reshape(lead[:-1] + (1,) + v.shape[-2:])  # (B, Hkv, 1, Tk, Dv)
        out = xp.zeros(lead + (tq, dv), dtype=q.dtype)   # (B, Hkv, G, Tq, Dv); rows seeing no key stay 0
        keep = _keep_mask(lead + (tq, tk), dropout_p, device_of(q)) if dropout_p > 0 else None  # (B, Hkv, G, Tq, Tk)
        if mask is not None:                             # a view, sliced per block below
            mask = xp.broadcast_to(mask, q.shape[:-1] + (tk,)).reshape(lead + (tq, tk))
        qs = qg * scale
        blocks = []
        for i0, i1, kend in _causal_chunks(tq, tk, causal):
            for b in _batch_slices(lead + (i1 - i0, kend), xp):
                # a slice of the batch at a time, so that its scores stay in cache through
                # the softmax's steps (a whole block of rows can be tens of MB)
                # S = (q * scale) @ k^T on this block of query rows
                s = xp.matmul(qs[b, ..., i0:i1, :], kg[b, ..., :kend, :].swapaxes(-1, -2))  # (b, Hkv, G, r, kend)
                if causal and tk - tq + i0 + 1 < kend:   # else every row sees all kend keys (one new token)
                    # row i0 + r sees keys j <= Tk - Tq + i0 + r: only the columns from c0 on
                    # can be in the future, an upper triangle of them
                    c0 = max(0, tk - tq + i0 + 1)
                    future = xp.triu(xp.ones((i1 - i0, kend - c0), dtype=bool), k=tk - tq + i0 + 1 - c0)
                    xp.copyto(s[..., c0:], -xp.inf, where=future)
                if mask is not None:
                    m = mask[b, ..., i0:i1, :kend]
                    if m.dtype == bool:
                        xp.copyto(s, -xp.inf, where=~m)  # True = keep
                    else:
                        s += m                           # additive mask
                # P = softmax(S) along the keys, shifted by the row max (in S's buffer)
                rmax = s.max(axis=-1, keepdims=True)     # (b, Hkv, G, r, 1)
                rmax[rmax == -xp.inf] = 0                # a row with every key masked: keep it -inf
                s -= rmax
                p = xp.exp(s, out=s)
                total = _sum_last(p)                     # (b, Hkv, G, r, 1)
                total[total == 0] = 1                    # ... so its probabilities (and output) are 0
                p *= 1.0 / total
                # Pd = P * keep / (1 - p_drop), inverted dropout on the probabilities
                kb = None if keep is None else keep[b, ..., i0:i1, :kend]  # (b, Hkv, G, r, kend) bool
                pd = p if kb is None else _dropped(p, kb, dropout_p)
                # out = Pd @ v
                xp.matmul(pd, vg[b, ..., :kend, :], out=out[b, ..., i0:i1, :])  # (b, Hkv, G, r, Dv)
                if any(self.needs_grad):                 # else no backward reads P, and the next
                    blocks.append((b, i0, i1, kend, p, kb))   # block's scores reuse its memory, still in cache
        # saved: P of each block (together at most one (B, H, Tq, Tk) array, about
        # half of it when causal), its slice of the boolean dropout mask, and references to the
        # inputs and to the output (O is needed for rowsum below)
        self.blocks, self.q, self.k, self.v, self.out = blocks, qg, kg, vg, out
        self.dropout_p, self.scale = dropout_p, scale
        self.shapes = q.shape, k.shape, v.shape
        return out.reshape(q.shape[:-1] + (dv,))         # (B, H, Tq, Dv)

    def backward(self, g):
        # out = Pd @ v, Pd = P * keep / (1 - p_drop), P = softmax(S), S = scale * q @ k^T;
        # g = dout. Each forward line, last first, and what it sends back:
        #   out = Pd @ v            ->  dv = Pd^T @ dout,  dPd = dout @ v^T
        #   Pd = P * keep / (1 - p) ->  dP = dPd * keep / (1 - p)
        #   P = softmax(S)          ->  dS = P * (dP - rowsum(dP * P)), and rowsum(dP * P) =
        #                               rowsum(dout * out) (sum_j dP_ij P_ij = dout_i . sum_j Pd_ij v_j),
        #                               one (B, H, Tq, 1) array computed before the loop
        #   S = scale * q @ k^T     ->  dq = scale * dS @ k,  dk = scale * dS^T @ q
        # Grouped queries: key/value head j is used by the G query heads of its group, in
        # S_g = scale * q_g @ k_j^T and out_g = Pd_g @ v_j for g = 1..G. A weight used G times
        # gets the sum of its G gradients: dk_j = scale * sum_g dS_g^T @ q_g, dv_j = sum_g Pd_g^T @ dout_g
        # (the sum over the group axis of the broadcast matmul's result); dq needs no sum.
        # Block by block of query rows: block [i0, i1) touches keys [0, kend) only (P is 0
        # beyond, so are its gradients), and its dv and dk contributions add into those rows;
        # each block in the forward's slices b of the batch.
        xp = get_array_module(g)
        need_q, need_k, need_v = self.needs_grad
        q, k, v = self.q, self.k, self.v
        g = g.reshape(self.out.shape)                    # (B, Hkv, G, Tq, Dv), a view
        inv_keep = _keep_scale(self.dropout_p)
        dq = xp.zeros_like(q) if need_q else None        # (B, Hkv, G, Tq, D)
        dk = xp.zeros_like(k) if need_k else None        # (B, Hkv, 1, Tk, D)
        dv = xp.zeros(v.shape, dtype=g.dtype) if need_v else None  # (B, Hkv, 1, Tk, Dv)
        rowsum = _sum_last(g, self.out) if need_q or need_k else None  # (B, Hkv, G, Tq, 1) rowsum(dout * out)
        for b, i0, i1, kend, p, keep in self.blocks:
            dout = g[b, ..., i0:i1, :]                   # (b, Hkv, G, r, Dv)
            # out = Pd @ v
            if need_v:
                pd = p if keep is None else _dropped(p, keep, self.dropout_p)  # (b, Hkv, G, r, kend)
                dv[b, ..., :kend, :] += _group_sum(xp.matmul(pd.swapaxes(-1, -2), dout))  # dv = sum_g Pd^T @ dout
            if not (need_q or need_k):
                continue
            dpd = xp.matmul(dout, v[b, ..., :kend, :].swapaxes(-1, -2))  # (b, Hkv, G, r, kend) dPd = dout @ v^T
            # Pd = P * keep / (1 - p_drop)
            dp = dpd                                     # dP = dPd without dropout
            if keep is not None:
                dp = xp.multiply(dpd, keep, out=dpd)     # dP = dPd * keep / (1 - p)   (in dPd's buffer)
                dp *= inv_keep
            # P = softmax(S)
            ds = xp.subtract(dp, rowsum[b, ..., i0:i1, :], out=dp)  # dS = P * (dP - rowsum)  (in dP's buffer)
            ds *= p
            # S = scale * q @ k^T (the scale is applied once, after the loop)
            if need_q:
                xp.matmul(ds, k[b, ..., :kend, :], out=dq[b, ..., i0:i1, :])  # (b, Hkv, G, r, D)
            if need_k:
                dk[b, ..., :kend, :] += _group_sum(xp.matmul(ds.swapaxes(-1, -2), q[b, ..., i0:i1, :]))  # sum_g dS^T @ q
        if need_q:
            dq *= self.scale
        if need_k:
            dk *= self.scale
        q_shape, k_shape, v_shape = self.shapes
        return (None if dq is None else dq.reshape(q_shape), None if dk is None else dk.reshape(k_shape),
                None if dv is None else dv.reshape(v_shape))


def _group_sum(x: Any) -> Any:
    """x (B, Hkv, G, rows, cols) summed over its G query heads, keepdims; x itself when G = 1."""
    return x if x.shape[-3] == 1 else x.sum(axis=-3, keepdims=True)


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = True, attn_mask: Any = None,
                                 dropout_p: float = 0.0, scale: float | None = None) -> Tensor:
    """softmax(q @ k^T * scale + mask) @ v as one node, on (B, H, T, D) (any leading axes).

    q is (..., H, Tq, D), k (..., Hkv, Tk, D), v (..., Hkv, Tk, Dv). With
    Hkv < H (grouped-query attention), H must be a multiple of Hkv and query
    head h attends with key/value head h // (H / Hkv). With causal=True and
    Tq < Tk (a query block against a longer key cache), query i sits at
    absolute position Tk - Tq + i: the causal mask is aligned bottom-right, as
    in PyTorch and flash-attn. attn_mask broadcasts to (..., H, Tq, Tk): boolean
    (True = keep) or additive float (no gradient flows into it). A query row
    whose keys are all masked gets zero output and zero gradient. Dropout
    (inverted) acts on the probabilities whenever dropout_p > 0. scale
    defaults to 1 / sqrt(D).
    """
    q, k, v = _as_tensor(q), _as_tensor(k), _as_tensor(v)
    _same_device("scaled_dot_product_attention", q, k, v)
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"scaled_dot_product_attention: q, k, v need the same number (>= 2) of axes, "
                         f"got shapes {q.shape}, {k.shape}, {v.shape}")
    if q.shape[:-3] != k.shape[:-3] or k.shape[:-2] != v.shape[:-2] or q.shape[-1] != k.shape[-1] \
            or k.shape[-2] != v.shape[-2] or (q.ndim > 2 and q.shape[-3] % k.shape[-3]):
        raise ValueError(
            f"scaled_dot_product_attention: shapes q {q.shape}, k {k.shape}, v {v.shape} do not fit: "
            "need q (..., H, Tq, D), k (..., Hkv, Tk, D), v (..., Hkv, Tk, Dv) with the same leading axes "
            "and H a multiple of Hkv"
        )
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], got {dropout_p}")
    mask = None
    if attn_mask is not None:
        mask = to_device(_array(attn_mask), q.device)
        if mask.dtype != bool:
            mask = mask.astype(q.dtype, copy=False)
        scores = q.shape[:-1] + k.shape[-2:-1]
        try:
            ok = np.broadcast_shapes(mask.shape, scores) == scores
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {mask.shape} does not "
                             f"broadcast to the scores' shape {scores}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return ScaledDotProductAttentionFunction.apply(q, k, v, mask=mask, causal=causal,
                                                   dropout_p=float(dropout_p), scale=scale)


# ---- embedding, linear, dropout -------------------------------------------------------
class EmbeddingFunction(Function):
    """Derived in docs/linear-embedding-dropout.md; twin: reference.embedding."""

    def forward(self, weight, ids):
        self.ids, self.w_shape = ids, weight.shape
        return get_array_module(weight).take(weight, ids, axis=0)  # (*ids.shape, C)

    def backward(self, g):
        # y[n] = W[ids[n]]: dW[r] = sum of g[n] over every n with ids[n] == r (repeats accumulate)
        xp = get_array_module(g)
        ids = self.ids.reshape(-1)                       # (N,)
        g2 = g.reshape(-1, g.shape[-1])                  # (N, C)
        # the rows are added straight into W's gradient when it is at hand (a weight
        # tied to the LM head already has one), else into zeros (or its empty slot)
        dw, holds_gradient = slot_for(self, 0)           # (V, C)
        if dw is None:
            dw = xp.zeros(self.w_shape, dtype=g.dtype)
        elif not holds_gradient:
            dw.fill(0)
        if xp is not np or ids.size == 0:
            xp.add.at(dw, ids, g2)                       # CuPy: atomic adds on the GPU
            return dw
        # CPU: sort the ids so equal ids are adjacent, then sum each run of rows
        # with one reduceat (about 2x np.add.at, and no Python loop)
        order = np.argsort(ids, kind="stable")           # (N,)
        sorted_ids = ids[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))  # (U,)
        dw[sorted_ids[starts]] += np.add.reduceat(g2[order], starts, axis=0)  # (U, C), each row once
        return dw


def embedding(ids: Any, weight: Tensor) -> Tensor:
    """weight[ids]: one row of weight (V, C) per id; ids of any shape -> (*ids.shape, C)."""
    weight = _as_tensor(weight)
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (V, C), got shape {weight.shape}")
    ids = _int_array(ids, "embedding ids", weight.device)
    vocab = weight.shape[0]
    bad = _out_of_range(ids, vocab)
    if bad is not None:
        raise IndexError(f"embedding: id {bad} is out of range for a vocabulary of {vocab} rows "
                         f"(valid ids are 0..{vocab - 1})")
    return EmbeddingFunction.apply(weight, ids=ids)


class LinearFunction(Function):
    """Derived in docs/linear-embedding-dropout.md; twin: reference.linear."""

    def forward(self, x, w, b):
        x2 = x.reshape(-1, x.shape[-1])                  # (N, in)
        y = x2 @ w.T                                     # (N, out) y = x W^T + b
        if b is not None:
            y += b
        self.x2, self.w, self.in_shape = x2, w, x.shape
        return y.reshape(x.shape[:-1] + w.shape[:1])     # (..., out)

    def backward(self, g):
        # y = x W^T + b: dx = g W, dW = g^T x, db = sum_N g (leading axes flattened into N)
        xp = get_array_module(g)
        g2 = g.reshape(-1, g.shape[-1])                  # (N, out)
        needs = self.needs_grad
        dx = (g2 @ self.w).reshape(self.in_shape) if needs[0] else None  # (..., in)
        dw = None
        if needs[1]:                                     # (out, in), straight into W's empty gradient slot if any
            slot, holds_gradient = slot_for(self, 1)
            dw = xp.matmul(g2.T, self.x2, out=None if holds_gradient else slot)
        return dx, dw, (g2.sum(axis=0) if needs[2] else None)  # (out,)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight^T + bias, weight (out, in) as in PyTorch; x (..., in) -> (..., out)."""
    x, weight = _as_tensor(x), _as_tensor(weight)
    _same_device("linear", x, weight, bias)
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x of shape {x.shape} does not fit weight of shape {weight.shape} "
                         "(need x (..., in) and weight (out, in))")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"linear: bias of shape {bias.shape} does not fit weight of shape {weight.shape} "
                         f"(need bias ({weight.shape[0]},))")
    return LinearFunction.apply(x, weight, bias)


class DropoutFunction(Function):
    """Derived in docs/linear-embedding-dropout.md; twin: reference.dropout."""

    def forward(self, x, p):
        shape, x = x.shape, x.reshape(-1)               # (n,)
        keep = _keep_mask(x.shape, p, device_of(x))      # (n,) bool, True with probability 1 - p
        y = _dropped(x, keep, p)                         # y = x * keep / (1 - p)
        self.keep, self.p = keep, p                      # the mask is saved: backward must drop the same elements
        return y.reshape(shape)

    def backward(self, g):
        # y = x * keep / (1 - p), a diagonal Jacobian: dx = g * keep / (1 - p)
        return _dropped(g.reshape(-1), self.keep, self.p).reshape(g.shape)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout: zero each element with probability p and scale the
    rest by 1 / (1 - p), so the expected value is unchanged. The identity (the
    same tensor) when not training or p == 0. The mask comes from the seeded
    generator on the CPU (same mask on every device; on a GPU the draw and the
    copy cost a host-to-device transfer of a boolean array)."""
    x = _as_tensor(x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    return DropoutFunction.apply(x, p=float(p))


# ---- preference loss (DPO) ----------------------------------------------------------
class DPOLossFunction(Function):
    """Derived in docs/dpo.md; twin: reference.dpo_loss."""

    def forward(self, chosen, rejected, ref_chosen, ref_rejected, beta, reduction):
        xp = get_array_module(chosen)
        # z = beta * Delta, Delta = (chosen - ref_chosen) - (rejected - ref_rejected)     (B,)
        z = chosen - ref_chosen
        z -= rejected - ref_rejected
        z *= beta
        # loss_b = -log sigmoid(z) = log(1 + e^-z) = max(-z, 0) + log(1 + e^-|z|): finite for any z
        e = xp.exp(-xp.abs(z))                           # e^-|z| in (0, 1]
        losses = xp.maximum(-z, 0.0) + xp.log1p(e)       # (B,)
        # saved: sigmoid(-z) alone, = e^-z / (1 + e^-z) for z >= 0 and 1 / (1 + e^z) below
        self.s = xp.where(z >= 0, e, 1.0) / (1.0 + e)    # (B,)
        self.beta, self.reduction = beta, reduction
        if reduction == "none":
            return losses
        total = losses.sum()
        return total if reduction == "sum" else total / max(len(losses), 1)

    def backward(self, g):
        # loss_b = -log sigmoid(z_b), z_b = beta (chosen_b - rejected_b - ref terms):
        #   dloss_b/dz_b = -sigmoid(-z_b), so dchosen_b = -beta sigmoid(-z_b) g_b and drejected_b = -dchosen_b,
        #   with g_b = g ("sum"), g / B ("mean") or the upstream g_b ("none")
        if self.reduction == "mean":
            g = g / max(len(self.s), 1)
        d_chosen = self.s * (-self.beta)
        d_chosen *= g
        return d_chosen, -d_chosen


def dpo_loss(chosen: Tensor, rejected: Tensor, ref_chosen: Any, ref_rejected: Any, beta: float = 0.1,
             reduction: str = "mean") -> Tensor:
    """Direct Preference Optimization's loss (Rafailov et al. 2023) for B preference pairs:

        -log sigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))

    `chosen`, `rejected` (B,): the policy's summed log-probabilities of each pair's
    two responses; `ref_chosen`, `ref_rejected` (B,): the frozen reference model's,
    constants (arrays or tensors; no gradient flows into them). Mean over the pairs,
    or their sum, or one loss per pair ("none"). docs/dpo.md derives the backward."""
    chosen, rejected = _as_tensor(chosen), _as_tensor(rejected)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"dpo_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    refs = [to_device(_array(r), chosen.device) for r in (ref_chosen, ref_rejected)]
    shapes = [chosen.shape, rejected.shape] + [tuple(r.shape) for r in refs]
    if chosen.ndim != 1 or len(set(shapes)) != 1:
        raise ValueError(f"dpo_loss: chosen, rejected, ref_chosen and ref_rejected need one shape (B,), got "
                         f"{', '.join(map(str, shapes))}")
    _same_device("dpo_loss", chosen, rejected)
    return DPOLossFunction.apply(chosen, rejected, ref_chosen=refs[0].astype(chosen.dtype, copy=False),
                                 ref_rejected=refs[1].astype(chosen.dtype, copy=False), beta=float(beta),
                                 reduction=reduction)


__all__ += ["dpo_loss"]
