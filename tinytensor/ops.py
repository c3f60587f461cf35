"""Primitive differentiable operations, each forward beside its backward.

Notation in the comments: the op computes `y = f(x)`, the loss is L, `g` is
dL/dy (the `grad` handed to backward), and backward returns dL/dx. Saved
buffers are plain attributes on `self`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .backend import device_of, get_array_module, to_device
from .tensor import Function, Tensor, _data, _pair


def sum_to_shape(g: Any, shape: tuple[int, ...]) -> Any:
    """Undo broadcasting: sum `g` over the axes that broadcasting stretched.

    If x of `shape` was broadcast to g.shape in the forward, each x element fed
    every copy of itself, so dL/dx is the sum of the gradients of its copies.
    """
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead:  # axes that broadcasting added in front
        g = g.sum(axis=tuple(range(lead)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:  # axes of size 1 that broadcasting stretched
        g = g.sum(axis=stretched, keepdims=True)
    return g


def _normalize_axes(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(a % ndim if ndim else a for a in axes)


def _unreduce(g: Any, in_shape: tuple[int, ...], axis: Any, keepdims: bool) -> Any:
    """Reshape the gradient of a reduction so it broadcasts against its input."""
    if not keepdims:
        axes = _normalize_axes(axis, len(in_shape))
        shape = [1 if i in axes else n for i, n in enumerate(in_shape)]
        g = g.reshape(shape)
    return g


# ---- arithmetic (NumPy broadcasting) -------------------------------------------
class Add(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, g):
        # y = a + b: da = g, db = g (then undo broadcasting)
        return sum_to_shape(g, self.a_shape), sum_to_shape(g, self.b_shape)


class Sub(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, g):
        # y = a - b: da = g, db = -g
        db = sum_to_shape(-g, self.b_shape) if self.needs_grad[1] else None
        return sum_to_shape(g, self.a_shape), db


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        # y = a * b: da = g * b, db = g * a
        da = sum_to_shape(g * self.b, self.a.shape) if self.needs_grad[0] else None
        db = sum_to_shape(g * self.a, self.b.shape) if self.needs_grad[1] else None
        return da, db


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        # y = a / b: da = g / b, db = -g * a / b^2
        da = sum_to_shape(g / self.b, self.a.shape) if self.needs_grad[0] else None
        db = sum_to_shape(-g * self.a / (self.b * self.b), self.b.shape) if self.needs_grad[1] else None
        return da, db


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        # y = -x: dx = -g
        return -g


class PowScalar(Function):
    def forward(self, x, p):
        self.x, self.p = x, p
        return x ** p

    def backward(self, g):
        # y = x^p: dx = g * p * x^(p-1); for p = 0, y = 1 and dx = 0 (not 0 * x^-1, NaN at x = 0)
        if self.p == 0:
            return get_array_module(g).zeros_like(g)
        return g * (self.p * self.x ** (self.p - 1))


class Pow(Function):
    def forward(self, a, b):
        y = a ** b
        self.a, self.b, self.y = a, b, y
        return y

    def backward(self, g):
        # y = a^b: da = g * b * a^(b-1), db = g * y * ln(a)
        xp = get_array_module(g)
        da = sum_to_shape(g * self.b * self.a ** (self.b - 1), self.a.shape) if self.needs_grad[0] else None
        db = sum_to_shape(g * self.y * xp.log(self.a), self.b.shape) if self.needs_grad[1] else None
        return da, db


class MatMul(Function):
    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul needs at least 1-D operands, got shapes {a.shape} and {b.shape}; use * for scalars")
        k_a = a.shape[-1]
        k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if k_a != k_b:
            raise ValueError(
                f"matmul shape mismatch: {a.shape} @ {b.shape}: the last axis of the left ({k_a}) "
                f"must equal the {'only' if b.ndim == 1 else 'second-to-last'} axis of the right ({k_b})"
            )
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        # Y = A @ B: dA = G @ B^T, dB = A^T @ G; batch axes that were broadcast are summed.
        # 1-D operands are promoted to matrices the way matmul does: a (k,) -> (1, k), b (k,) -> (k, 1)
        a, b = self.a, self.b
        if b.ndim == 1:
            g = g[..., None]
            b = b[:, None]
        if a.ndim == 1:
            g = g[..., None, :]
            a = a[None, :]
        da = db = None
        if self.needs_grad[0]:
            da = sum_to_shape(g @ b.swapaxes(-1, -2), a.shape)
            da = da.reshape(self.a.shape) if self.a.ndim == 1 else da
        if self.needs_grad[1]:
            db = sum_to_shape(a.swapaxes(-1, -2) @ g, b.shape)
            db = db.reshape(self.b.shape) if self.b.ndim == 1 else db
        return da, db


# ---- reductions ----------------------------------------------------------------
class Sum(Function):
    def forward(self, x, axis, keepdims):
        self.in_shape, self.axis, self.keepdims = x.shape, axis, keepdims
        return x.sum(axis=axis, keepdims=keepdims)

    def backward(self, g):
        # y = sum_i x_i: dx_i = g (copied back over the summed axes)
        xp = get_array_module(g)
        return xp.broadcast_to(_unreduce(g, self.in_shape, self.axis, self.keepdims), self.in_shape)


class Mean(Function):
    def forward(self, x, axis, keepdims):
        self.in_shape, self.axis, self.keepdims = x.shape, axis, keepdims
        y = x.mean(axis=axis, keepdims=keepdims)
        self.count = x.size // max(y.size, 1) if x.size else 0
        return y

    def backward(self, g):
        # y = sum_i x_i / n: dx_i = g / n
        xp = get_array_module(g)
        g = _unreduce(g, self.in_shape, self.axis, self.keepdims) / self.count
        return xp.broadcast_to(g, self.in_shape)


class Max(Function):
    """Gradient goes to the arg-max; when several elements tie for the max,
    it is split equally between them (a valid subgradient, symmetric in ties)."""

    def forward(self, x, axis, keepdims):
        y = x.max(axis=axis, keepdims=True)
        self.winners = x == y
        self.axis, self.keepdims = axis, keepdims
        return y if keepdims else y.squeeze(axis=_normalize_axes(axis, x.ndim))

    def backward(self, g):
        # y = max_i x_i: dx_i = g * [x_i is a max] / (number of maxima)
        ties = self.winners.sum(axis=self.axis, keepdims=True)
        g = _unreduce(g, self.winners.shape, self.axis, self.keepdims)
        return self.winners * (g / ties)


# ---- elementwise -------------------------------------------------------------
class Exp(Function):
    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, g):
        # y = e^x: dx = g * y
        return g * self.y


class Log(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, g):
        # y = ln x: dx = g / x
        return g / self.x


class Sqrt(Function):
    def forward(self, x):
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, g):
        # y = sqrt(x): dx = g / (2 y)
        return g / (2 * self.y)


class Tanh(Function):
    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, g):
        # y = tanh x: dx = g * (1 - y^2)
        return g * (1 - self.y * self.y)


class Relu(Function):
    def forward(self, x):
        self.positive = x > 0
        return get_array_module(x).maximum(x, 0)

    def backward(self, g):
        # y = max(x, 0): dx = g where x > 0, else 0 (0 at x = 0 itself)
        return g * self.positive


class Clip(Function):
    def forward(self, x, lo, hi):
        xp = get_array_module(x)
        self.inside = xp.ones(x.shape, dtype=bool)
        if lo is not None:
            self.inside &= x >= lo
        if hi is not None:
            self.inside &= x <= hi
        return xp.clip(x, lo, hi)

    def backward(self, g):
        # y = min(max(x, lo), hi): dx = g inside [lo, hi] (boundaries included), else 0
        return g * self.inside


class Where(Function):
    def forward(self, a, b, cond):
        self.cond, self.a_shape, self.b_shape = cond, a.shape, b.shape
        return get_array_module(a).where(cond, a, b)

    def backward(self, g):
        # y = cond ? a : b: da = g where cond, db = g where not cond
        xp = get_array_module(g)
        zero = xp.zeros((), dtype=g.dtype)
        da = sum_to_shape(xp.where(self.cond, g, zero), self.a_shape) if self.needs_grad[0] else None
        db = sum_to_shape(xp.where(self.cond, zero, g), self.b_shape) if self.needs_grad[1] else None
        return da, db


class MaskedFill(Function):
    def forward(self, x, mask, value):
        xp = get_array_module(x)
        mask = xp.asarray(mask, dtype=bool)
        if mask.shape != x.shape:
            mask = xp.broadcast_to(mask, x.shape)  # raises if the shapes do not broadcast
        self.mask = mask
        return xp.where(mask, xp.asarray(value, dtype=x.dtype), x)

    def backward(self, g):
        # y = mask ? value : x: dx = g where the mask is off, 0 where it was filled
        xp = get_array_module(g)
        return xp.where(self.mask, xp.zeros((), dtype=g.dtype), g)


# ---- shape -------------------------------------------------------------------
class Reshape(Function):
    def forward(self, x, shape):
        self.in_shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) into {shape}") from None

    def backward(self, g):
        # a reshape moves no values: the gradient takes the input's shape back
        return g.reshape(self.in_shape)


class Transpose(Function):
    def forward(self, x, axes):
        if axes is not None and sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
            raise ValueError(
                f"transpose of a {x.ndim}-D tensor needs a permutation of all {x.ndim} axes, got {axes}; "
                "use swapaxes(a, b) to swap two axes"
            )
        self.axes = axes
        return x.transpose(axes)

    def backward(self, g):
        # y = x.transpose(p): dx = g.transpose(inverse of p)
        if self.axes is None:
            return g.transpose()
        return g.transpose(np.argsort([a % g.ndim for a in self.axes]))


class BroadcastTo(Function):
    def forward(self, x, shape):
        self.in_shape = x.shape
        try:
            return get_array_module(x).broadcast_to(x, shape)
        except ValueError:
            raise ValueError(f"cannot broadcast a tensor of shape {x.shape} to {shape}") from None

    def backward(self, g):
        # each input element was copied to several outputs: sum their gradients
        return sum_to_shape(g, self.in_shape)


def _has_array_index(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(not isinstance(p, (int, np.integer, slice, type(None), type(Ellipsis))) for p in parts)


class GetItem(Function):
    def forward(self, x, index):
        self.in_shape, self.index = x.shape, index
        return x[index]

    def backward(self, g):
        # y = x[index]: dx is zero except at the picked places, which receive g.
        # An integer-array index may pick the same element twice: scatter-ADD then.
        xp = get_array_module(g)
        dx = xp.zeros(self.in_shape, dtype=g.dtype)
        if _has_array_index(self.index):
            xp.add.at(dx, self.index, g)
        else:
            dx[self.index] = g
        return dx


def _empty_in_layout(xp: Any, shape: tuple[int, ...], strides: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised array of `shape` whose axes lie in memory in the order
    `strides` gives (largest first): the gradient of a transposed view, laid out
    so that undoing the transposes gives a contiguous array, and undoing the
    reshapes before them costs no copy."""
    perm = sorted(range(len(shape)), key=lambda i: -abs(strides[i]))
    if perm == sorted(perm):
        return xp.empty(shape, dtype=dtype)
    inverse = tuple(int(i) for i in np.argsort(perm))
    return xp.empty(tuple(shape[i] for i in perm), dtype=dtype).transpose(inverse)


class Split(Function):
    """Pieces of x along `axis`, all outputs of this one node; with squeeze
    (unbind), pieces of length 1 with the axis dropped."""

    multi_output = True

    def forward(self, x, sizes, axis, squeeze):
        lead = (slice(None),) * (axis % x.ndim)
        ends = np.cumsum(sizes).tolist()
        self.places = [lead + ((end - 1,) if squeeze else (slice(end - size, end),)) for size, end in zip(sizes, ends)]
        self.in_shape, self.in_strides = x.shape, x.strides
        return tuple(x[place] for place in self.places)

    def backward(self, grads):
        # y_i = x[place_i]: each piece of dx is its output's gradient, or 0 for an output that got none.
        # All are written into one buffer, so no full-size zero-filled gradient per piece
        if not isinstance(grads, list) or len(grads) != len(self.places):
            raise TypeError(f"Split.backward takes a list of {len(self.places)} gradients, one per output "
                            "(None for an output that got none), as Tensor.backward passes them")
        first = next(g for g in grads if g is not None)
        dx = _empty_in_layout(get_array_module(first), self.in_shape, self.in_strides, first.dtype)
        for place, g in zip(self.places, grads):
            dx[place] = 0 if g is None else g
        return dx


class Concatenate(Function):
    def forward(self, *arrays, axis):
        self.axis = axis
        # a list, not a NumPy array: CuPy's split takes no host array among its arguments
        self.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1].tolist()
        return get_array_module(arrays[0]).concatenate(arrays, axis=axis)

    def backward(self, g):
        # each input gets back its own slice of g
        return tuple(get_array_module(g).split(g, self.bounds, axis=self.axis))


class Stack(Function):
    def forward(self, *arrays, axis):
        self.axis = axis
        return get_array_module(arrays[0]).stack(arrays, axis=axis)

    def backward(self, g):
        # input i is y[..., i, ...] along the new axis
        n = g.shape[self.axis]
        return tuple(g.take(i, axis=self.axis) for i in range(n))


class ToDevice(Function):
    def forward(self, x, device):
        self.source = device_of(x)
        return to_device(x, device)

    def backward(self, g):
        # a copy: the gradient goes back to where the input lives
        return to_device(g, self.source)


class Cast(Function):
    def forward(self, x, dtype):
        self.in_dtype = x.dtype
        return x.astype(dtype)

    def backward(self, g):
        return g.astype(self.in_dtype)


# ---- functions of several tensors ------------------------------------------------
def _tensors(items: Sequence[Any]) -> list[Tensor]:
    if not items:
        raise ValueError("expected at least one tensor")
    first = next((t for t in items if isinstance(t, Tensor)), None)
    if first is None:
        return [Tensor(t) for t in items]
    return [t if isinstance(t, Tensor) else _pair(first, t)[1] for t in items]


def concatenate(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    return Concatenate.apply(*_tensors(tensors), axis=axis)


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    return Stack.apply(*_tensors(tensors), axis=axis)


def split(x: Tensor, split_size_or_sections: int | Sequence[int], axis: int = 0) -> list[Tensor]:
    """PyTorch's split: an int gives pieces of that size (the last may be
    smaller); a list gives the size of each piece. The pieces are the outputs
    of one node, so their gradients meet in one buffer."""
    _check_axis(x, axis, "split")
    n = x.shape[axis]
    if isinstance(split_size_or_sections, (int, np.integer)):
        size = int(split_size_or_sections)
        if size <= 0:
            raise ValueError(f"split size must be positive, got {size}")
        sizes = [min(size, n - s) for s in range(0, n, size)]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split sizes {sizes} add up to {sum(sizes)}, but axis {axis} has length {n}")
    return list(Split.apply(x, sizes=sizes, axis=axis, squeeze=False))


def unbind(x: Tensor, axis: int = 0) -> tuple[Tensor, ...]:
    """The slices of x along `axis`, that axis removed: q, k, v = qkv.unbind(0).
    One node, so their gradients meet in one buffer."""
    _check_axis(x, axis, "unbind")
    return Split.apply(x, sizes=[1] * x.shape[axis], axis=axis, squeeze=True)


def _check_axis(x: Tensor, axis: int, name: str) -> None:
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for a tensor of shape {x.shape}")


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """Elementwise `a if cond else b`, broadcasting all three."""
    cond = _data(cond)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = Tensor(a)
    a, b = _pair(a, b) if isinstance(a, Tensor) else _pair(b, a, reflected=True)
    xp = get_array_module(a.data)
    return Where.apply(a, b, cond=xp.asarray(cond, dtype=bool))
