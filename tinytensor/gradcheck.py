"""Check hand-written backward passes against finite differences.

For an output y = fn(*inputs) of any shape we check the scalar L = sum(y * w)
for a fixed random w, so every output element takes part: dL/dx from backward
must match (L(x + eps) - L(x - eps)) / (2 eps), a central difference with
error O(eps^2). Everything runs in float64, where eps = 1e-6 leaves about
1e-10 of rounding noise.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .backend import get_array_module, to_device
from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    pass


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    mode: str = "full",
    n_directions: int = 4,
    max_elements: int | None = None,
    seed: int = 0,
) -> bool:
    """Compare fn's analytic gradients with central finite differences.

    mode="full" perturbs every element (or `max_elements` random ones per
    input): two forward passes per element. mode="directional" checks the
    derivative along `n_directions` random directions through all inputs at
    once, dL/dx . u, which costs two forward passes per direction whatever the
    sizes (Chainer's check_backward does the same), so GPT-sized inputs stay cheap.

    Inputs that are tensors with requires_grad=False (or integer arrays) are
    held fixed. Raises GradcheckError naming the worst element on a mismatch.
    """
    if mode not in ("full", "directional"):
        raise ValueError(f"gradcheck mode must be 'full' or 'directional', got {mode!r}")
    if mode == "full":
        for i, shape, picks, exact, numeric in _full_differences(fn, inputs, eps, max_elements, seed):
            excess = np.abs(exact - numeric) - (atol + rtol * np.abs(numeric))
            if excess.size and excess.max() > 0:
                j = int(np.argmax(excess))
                idx = tuple(int(v) for v in np.unravel_index(int(picks[j]), shape))
                raise GradcheckError(
                    f"gradient of input {i} (shape {shape}) differs at index {idx}: "
                    f"backward gives {exact[j]:.10g}, finite differences give {numeric[j]:.10g} "
                    f"(|diff| = {abs(exact[j] - numeric[j]):.3g}, atol={atol}, rtol={rtol})"
                )
        return True
    rng = np.random.default_rng(seed)
    tensors, checked, analytic, loss = _backward_once(fn, inputs, rng)
    xp = get_array_module(tensors[checked[0]].data)
    for d in range(n_directions):
        dirs = [xp.asarray(rng.standard_normal(tensors[i].shape)) for i in checked]
        originals = [tensors[i].data.copy() for i in checked]
        for i, u, x0 in zip(checked, dirs, originals):
            tensors[i].data[...] = x0 + eps * u
        plus = loss()
        for i, u, x0 in zip(checked, dirs, originals):
            tensors[i].data[...] = x0 - eps * u
        minus = loss()
        for i, x0 in zip(checked, originals):
            tensors[i].data[...] = x0
        numeric = (plus - minus) / (2 * eps)
        exact = float(sum((a * u).sum() for a, u in zip(analytic, dirs)))
        if abs(exact - numeric) > atol + rtol * abs(numeric):
            raise GradcheckError(
                f"directional derivative {d} differs: backward gives {exact:.10g}, "
                f"finite differences give {numeric:.10g} (|diff| = {abs(exact - numeric):.3g})"
            )
    return True


def gradient_error(fn: Callable[..., Tensor], inputs: Sequence[Any], eps: float = 1e-6,
                   max_elements: int | None = None, seed: int = 0) -> float:
    """The worst disagreement of backward with central finite differences, over
    every checked element of every input (as gradcheck's "full" mode picks them):
    max |backward - fd| / max(1, |fd|), a relative error for gradients above 1
    and an absolute one below (where rounding noise would swamp a relative one)."""
    worst = 0.0
    for _, _, _, exact, numeric in _full_differences(fn, inputs, eps, max_elements, seed):
        if exact.size:
            worst = max(worst, float((np.abs(exact - numeric) / np.maximum(1.0, np.abs(numeric))).max()))
    return worst


def _backward_once(fn: Callable[..., Tensor], inputs: Sequence[Any], rng: np.random.Generator):
    """Float64 copies of the inputs, the positions of those checked, backward's gradients of
    L = sum(fn(*inputs) * w) for a random w, and a function giving L at the inputs' current values."""
    tensors = [_as_float64(x) for x in inputs]
    checked = [i for i, t in enumerate(tensors) if t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad; pass tensors with requires_grad=True")
    out = fn(*tensors)
    xp = get_array_module(out.data)
    w = xp.asarray(rng.standard_normal(out.shape))

    def loss() -> float:
        with no_grad():
            return float((fn(*tensors).data * w).sum())

    for t in tensors:
        t.grad = None
    out.backward(w)
    analytic = [tensors[i].grad if tensors[i].grad is not None else xp.zeros(tensors[i].shape) for i in checked]
    return tensors, checked, analytic, loss


def _full_differences(fn: Callable[..., Tensor], inputs: Sequence[Any], eps: float, max_elements: int | None,
                      seed: int) -> Iterator[tuple[int, tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]]:
    """For each checked input: (its position, its shape, the flat indices picked, backward's
    gradient there, the central finite differences there), both float64 on the CPU."""
    rng = np.random.default_rng(seed)
    tensors, checked, analytic, loss = _backward_once(fn, inputs, rng)
    for i, grad in zip(checked, analytic):
        x = tensors[i].data
        picks = np.arange(x.size)
        if max_elements is not None and x.size > max_elements:
            picks = rng.choice(x.size, size=max_elements, replace=False)
        numeric = np.zeros(len(picks))
        for j, k in enumerate(picks):
            idx = np.unravel_index(int(k), x.shape)
            orig = float(x[idx])
            x[idx] = orig + eps
            plus = loss()
            x[idx] = orig - eps
            minus = loss()
            x[idx] = orig
            numeric[j] = (plus - minus) / (2 * eps)
        exact = to_device(grad, "cpu").astype(np.float64).reshape(-1)[picks]
        yield i, x.shape, picks, exact, numeric


def _as_float64(x: Any) -> Tensor:
    """The input as a float64 tensor that gradcheck may perturb (and restores).

    A float64 tensor is used as it is, so `fn` may reach it some other way than
    its arguments (a model's parameter, say); anything else is copied.
    """
    if isinstance(x, Tensor):
        if x.dtype.kind != "f":
            return Tensor._wrap(x.data, False)
        if x.dtype == np.float64:
            return x
        xp = get_array_module(x.data)
        return Tensor._wrap(xp.array(x.data, dtype=xp.float64), x.requires_grad)
    arr = get_array_module(x).asarray(x)                 # a CuPy array stays on the GPU
    if arr.dtype.kind != "f":
        return Tensor._wrap(arr, False)
    return Tensor._wrap(arr.astype(np.float64), True)
