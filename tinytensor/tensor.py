"""The Tensor, the graph it records, and reverse-mode differentiation.

Every differentiable operation is a `Function`: `forward` computes the output
array from the input arrays and keeps (on `self`) exactly what `backward` will
need; `backward` receives dL/d(output) and returns dL/d(input) for each input.
`Function.apply` runs the forward and, when a gradient may be needed, links the
output tensor to the node so that `Tensor.backward` can find its way back.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import gradbuffer
from .backend import check_device, device_of, get_array_module, to_device, tune_allocator

DEFAULT_DTYPE = np.float32

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


class no_grad(contextlib.ContextDecorator):
    """Inside this block (or decorated function) no graph is recorded."""

    def __enter__(self) -> "no_grad":
        self._prev = is_grad_enabled()
        _state.grad_enabled = False
        return self

    def __exit__(self, *exc: Any) -> None:
        _state.grad_enabled = self._prev


class Function:
    """One node of the graph: an operation that remembers its inputs. Subclasses
    define `forward(*arrays, **options)` and `backward(grad)`; the attributes a
    forward sets on `self` are its saved buffers, dropped once the node's
    backward has run. A backward returns new arrays or views, never one of its
    saved buffers: the engine adds other gradients into a new array in place.
    (A parameter's gradient may instead go straight into its slot: gradbuffer.py.)

    A node with several outputs (`multi_output = True`, such as `split`)
    returns a tuple of arrays from forward and gets a list of gradients in
    backward, one per output, None for an output that received none; it runs
    once, after all of its outputs' consumers.
    """

    __slots__ = ("inputs", "needs_grad", "slots_open", "__dict__")
    multi_output = False

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs: "Tensor | None", **kwargs: Any) -> Any:
        """Run the node on `inputs`; None stands for an optional input left out
        (a layer without bias): forward gets None for it, and it needs no gradient."""
        fn = cls()
        needs = tuple([t is not None and t.requires_grad for t in inputs])
        record = True in needs and is_grad_enabled()
        # forward and backward read needs_grad to skip work for inputs that need no
        # gradient; a node that records nothing is dropped here with all it saved
        fn.needs_grad = needs if record else (False,) * len(needs)
        arrays = [None if t is None else t.data for t in inputs]
        if _profiler is None:
            data = fn.forward(*arrays, **kwargs)
        else:
            data = _profiler.forward(fn, arrays, kwargs)
        if record:
            fn.inputs = inputs
        if cls.multi_output:
            outs = tuple(Tensor._wrap(d, record) for d in data)
            if record:
                fn.n_outputs = len(outs)
                for i, out in enumerate(outs):
                    out._ctx, out._index = fn, i
            return outs
        if isinstance(data, np.generic):  # NumPy turns 0-d results into scalars
            data = np.asarray(data)
        out = Tensor._wrap(data, record)
        if record:
            out._ctx = fn
        return out


# the active tinytensor.profiler.Profile, or None; apply and backward run each
# node through it when it is set (one test of a module global per node when not)
_profiler: Any = None


def _swap_profiler(profiler: Any) -> Any:
    """Make `profiler` the active one; returns the one it replaces."""
    global _profiler
    previous, _profiler = _profiler, profiler
    return previous


class Tensor:
    # _index: which output of its node (_ctx) this tensor is; _grad_buffer: this leaf's
    # gradient slot, read and written only by gradbuffer.py
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_index", "_grad_buffer", "__weakref__")
    # NumPy arrays on the left of an operator defer to our reflected methods
    __array_ufunc__ = None

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None,
                 device: str | None = None):
        self.data = _as_array(data, dtype, device)
        self.grad = None
        self._ctx: Function | None = None
        self._index = 0
        self._grad_buffer = None
        self.requires_grad_(requires_grad)

    @classmethod
    def _wrap(cls, data: Any, requires_grad: bool) -> "Tensor":
        t = cls.__new__(cls)
        t.data, t.grad, t.requires_grad, t._ctx, t._index, t._grad_buffer = data, None, requires_grad, None, 0, None
        return t

    # ---- introspection -------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def device(self) -> str:
        return device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        return f"tensor({self.numpy()!r}{grad}{dev})"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU if it lives there)."""
        return to_device(self.data, "cpu")

    def item(self) -> float | int | bool:
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.item()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor._wrap(self.data, False)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and not _is_float(self.dtype):
            raise TypeError(f"only floating-point tensors can require grad, got dtype {self.dtype}; "
                            "pass dtype='float32' (or float64)")
        self.requires_grad = flag
        return self

    def to(self, device: str | None = None, dtype: Any = None) -> "Tensor":
        """Move to "cpu" or "cuda" and/or cast; differentiable."""
        out = self
        if device is not None and check_device(device) != self.device:
            out = ops.ToDevice.apply(out, device=device)
        if dtype is not None and np.dtype(dtype) != out.dtype:
            out = ops.Cast.apply(out, dtype=np.dtype(dtype))
        return out

    # ---- reverse mode --------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad`.

        `grad` is dL/d(self); it may be left out only for a one-element tensor
        (a loss), where it is 1. The graph's saved buffers are freed as the walk
        passes each node unless `retain_graph` is set. (`grads_of` gives any
        tensor's gradient, intermediates too, without writing .grad.)
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the "
                "computation had requires_grad=True (or it ran inside no_grad())"
            )
        grad = _seed(self, grad, "backward")
        if _profiler is None:
            _walk(self, grad, retain_graph, None)
        else:
            with _profiler.backward_pass():
                _walk(self, grad, retain_graph, _profiler)

    # ---- operators -----------------------------------------------------
    def __add__(self, other: Any) -> "Tensor":
        return ops.Add.apply(*_pair(self, other))

    def __radd__(self, other: Any) -> "Tensor":
        return ops.Add.apply(*_pair(self, other, reflected=True))

    def __sub__(self, other: Any) -> "Tensor":
        return ops.Sub.apply(*_pair(self, other))

    def __rsub__(self, other: Any) -> "Tensor":
        return ops.Sub.apply(*_pair(self, other, reflected=True))

    def __mul__(self, other: Any) -> "Tensor":
        return ops.Mul.apply(*_pair(self, other))

    def __rmul__(self, other: Any) -> "Tensor":
        return ops.Mul.apply(*_pair(self, other, reflected=True))

    def __truediv__(self, other: Any) -> "Tensor":
        return ops.Div.apply(*_pair(self, other))

    def __rtruediv__(self, other: Any) -> "Tensor":
        return ops.Div.apply(*_pair(self, other, reflected=True))

    def __pow__(self, other: Any) -> "Tensor":
        if isinstance(other, (int, float)):
            return ops.PowScalar.apply(self, p=other)
        return ops.Pow.apply(*_pair(self, other))

    def __rpow__(self, other: Any) -> "Tensor":
        return ops.Pow.apply(*_pair(self, other, reflected=True))

    def __matmul__(self, other: Any) -> "Tensor":
        return ops.MatMul.apply(*_pair(self, other))

    def __rmatmul__(self, other: Any) -> "Tensor":
        return ops.MatMul.apply(*_pair(self, other, reflected=True))

    def __neg__(self) -> "Tensor":
        return ops.Neg.apply(self)

    def __getitem__(self, index: Any) -> "Tensor":
        return ops.GetItem.apply(self, index=_unwrap_index(index))

    # comparisons give boolean tensors and carry no gradient
    def __lt__(self, other: Any) -> "Tensor":
        return Tensor._wrap(self.data < _data(other), False)

    def __le__(self, other: Any) -> "Tensor":
        return Tensor._wrap(self.data <= _data(other), False)

    def __gt__(self, other: Any) -> "Tensor":
        return Tensor._wrap(self.data > _data(other), False)

    def __ge__(self, other: Any) -> "Tensor":
        return Tensor._wrap(self.data >= _data(other), False)

    def __eq__(self, other: Any) -> "Tensor":  # type: ignore[override]
        return Tensor._wrap(self.data == _data(other), False)

    def __ne__(self, other: Any) -> "Tensor":  # type: ignore[override]
        return Tensor._wrap(self.data != _data(other), False)

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        return bool(self.data)

    # ---- methods -------------------------------------------------------
    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> "Tensor":
        return ops.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> "Tensor":
        return ops.Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> "Tensor":
        return ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def exp(self) -> "Tensor":
        return ops.Exp.apply(self)

    def log(self) -> "Tensor":
        return ops.Log.apply(self)

    def sqrt(self) -> "Tensor":
        return ops.Sqrt.apply(self)

    def tanh(self) -> "Tensor":
        return ops.Tanh.apply(self)

    def relu(self) -> "Tensor":
        return ops.Relu.apply(self)

    def reshape(self, *shape: Any) -> "Tensor":
        return ops.Reshape.apply(self, shape=_shape_args(shape))

    def transpose(self, *axes: Any) -> "Tensor":
        """NumPy's transpose: no argument reverses the axes, else a full permutation."""
        axes = _shape_args(axes)
        return ops.Transpose.apply(self, axes=axes or None)

    def permute(self, *axes: Any) -> "Tensor":
        return self.transpose(*axes)

    def swapaxes(self, a: int, b: int) -> "Tensor":
        perm = list(range(self.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return self.transpose(perm)

    @property
    def T(self) -> "Tensor":
        return self.transpose()

    def expand(self, *shape: Any) -> "Tensor":
        return ops.BroadcastTo.apply(self, shape=_shape_args(shape))

    broadcast_to = expand

    def split(self, split_size_or_sections: int | Sequence[int], axis: int = 0) -> list["Tensor"]:
        return ops.split(self, split_size_or_sections, axis)

    def unbind(self, axis: int = 0) -> tuple["Tensor", ...]:
        return ops.unbind(self, axis)

    def masked_fill(self, mask: Any, value: float) -> "Tensor":
        return ops.MaskedFill.apply(self, mask=_data(mask), value=value)

    def clip(self, min: float | None = None, max: float | None = None) -> "Tensor":
        return ops.Clip.apply(self, lo=min, hi=max)



def _is_float(dtype: Any) -> bool:
    return np.dtype(dtype).kind == "f"


# the first tensor made tunes malloc for the process (backend.tune_allocator); then this is False
_allocator_untuned = True


def _as_array(data: Any, dtype: Any, device: str | None) -> Any:
    global _allocator_untuned
    if _allocator_untuned:
        _allocator_untuned = False
        tune_allocator()
    if isinstance(data, Tensor):
        data = data.data
    if device is None:
        device = device_of(data)
    xp = get_array_module(data)
    if dtype is None and not hasattr(data, "dtype"):
        # Python numbers and lists: floats become float32, ints stay int64
        probe = np.asarray(data)
        dtype = DEFAULT_DTYPE if probe.dtype.kind == "f" else probe.dtype
    arr = xp.asarray(data, dtype=dtype)
    return to_device(arr, device)


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _unwrap_index(index: Any) -> Any:
    if isinstance(index, tuple):
        return tuple(_data(i) for i in index)
    return _data(index)


def _pair(t: Tensor, other: Any, reflected: bool = False) -> tuple[Tensor, Tensor]:
    """Lift `other` to a tensor on t's device, then order the operands."""
    if isinstance(other, Tensor):
        if type(other.data) is not type(t.data):
            raise RuntimeError(f"operands live on different devices: {t.device} and {other.device}; move one with .to()")
    else:
        # a Python number or array joins with the tensor's dtype, as PyTorch does
        xp = get_array_module(t.data)
        other_dtype = other.dtype if hasattr(other, "dtype") else np.asarray(other).dtype  # CuPy refuses np.asarray
        dtype = t.dtype if _is_float(t.dtype) or not _is_float(other_dtype) else None
        other = Tensor._wrap(xp.asarray(other, dtype=dtype), False)
    return (other, t) if reflected else (t, other)


def grads_of(loss: Tensor, tensors: Mapping[str, Tensor], grad: Any = None) -> dict[str, np.ndarray]:
    """The gradient of `loss` with respect to each named tensor, leaf or
    intermediate: {name: dL/dtensor}, NumPy arrays of the tensors' shapes, in
    the order given (PyTorch's retain_grad, without touching the graph).

    dL/dloss is 1 for a one-element loss, else `grad`. It runs backward's own
    walk, only looking: nothing is written into any .grad or optimizer slot,
    and the graph keeps its buffers, so loss.backward() works afterwards. A
    tensor the loss does not depend on gets zeros, as does a constant (a
    tensor that needs no gradient, whose gradient no walk computes).

        x = tt.tensor([1.0, 2.0], requires_grad=True)
        y = x * x
        tt.grads_of(y.sum(), {"y": y, "x": x})  # {"y": [1, 1], "x": [2, 4]}: dy = 1, dx = 2x dy
    """
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"grads_of: {name!r} is a {type(t).__name__}, not a Tensor")
    if not loss.requires_grad:
        raise RuntimeError("grads_of: the loss does not require grad, so nothing was recorded to differentiate: "
                           "give some input of the computation requires_grad=True")
    leaves = {id(t) for t in tensors.values() if t._ctx is None}
    nodes = {t._ctx for t in tensors.values() if t._ctx is not None}
    seen: dict[Any, Any] = {}  # a named node -> its output gradient(s); id(named leaf) -> the sum of its parts

    def observe(source: Any, g: Any) -> None:
        if isinstance(source, Tensor):
            if id(source) in leaves:
                part = to_device(g, "cpu")
                total = seen.get(id(source))
                seen[id(source)] = part.copy() if total is None else total + part
        elif source in nodes:
            seen[source] = [None if x is None else to_device(x, "cpu").copy() for x in g] \
                if source.multi_output else to_device(g, "cpu").copy()

    _walk(loss, _seed(loss, grad, "grads_of"), True, None, observe)
    out = {}
    for name, t in tensors.items():
        g = seen.get(id(t)) if t._ctx is None else seen.get(t._ctx)
        if g is not None and t._ctx is not None and t._ctx.multi_output:
            g = g[t._index]
        out[name] = np.zeros(t.shape, dtype=t.dtype) if g is None else g
    return out


def _seed(y: Tensor, grad: Any, caller: str) -> Any:
    """dL/dy to start a walk from y: 1 for a one-element y, else `grad` (copied, so the caller keeps theirs)."""
    xp = get_array_module(y.data)
    if grad is None:
        if y.data.size != 1:
            call = "y.backward(grad)" if caller == "backward" else "tt.grads_of(y, tensors, grad)"
            raise RuntimeError(
                f"{caller}() on a tensor of shape {y.shape} needs the gradient of the loss "
                f"with respect to it: call {call} with grad of shape {y.shape}, "
                "or reduce y to a scalar first (e.g. y.sum())"
            )
        return xp.ones_like(y.data)
    grad = xp.array(_data(grad), dtype=y.dtype)
    if grad.shape != y.shape:
        raise ValueError(f"{caller}(grad): grad has shape {grad.shape}, but the tensor has shape {y.shape}")
    return grad


def _walk(root_tensor: "Tensor", grad: Any, retain_graph: bool, profiler: Any,
          observe: Callable[[Any, Any], None] | None = None) -> None:
    """Backward's walk from `root_tensor`, whose gradient is `grad`: every node
    once, after all the nodes that consume its outputs; leaves accumulate.

    With `observe`, the walk writes nothing anywhere: it calls observe(node, g)
    with each node's complete output gradient g (a list, one per output, for a
    multi-output node) just before running the node's backward, and
    observe(leaf, part) with each part sent to a leaf, instead of adding it into
    the leaf's .grad; grads_of and draw_graph look at a graph this way.
    """
    root = root_tensor._ctx
    if root is None:
        if observe is None:
            _accumulate_leaf(root_tensor, grad, fresh=True)
        else:
            observe(root_tensor, grad)
        return
    if root.inputs is None:
        raise _freed_graph()
    # dL/d(output) waiting at each node not yet run: an array, or a list for a multi-output node
    pending: dict[Function, Any] = {root: [grad if i == root_tensor._index else None for i in range(root.n_outputs)]
                                    if root.multi_output else grad}
    # ids of the arrays in `pending` that this walk may add into in place (see _add)
    owned: set[int] = set()
    # ids of the gradients handed on so far (see _held_by_one)
    handed: set[int] = set()
    for fn in reversed(_topological_order(root)):
        g = pending.pop(fn, None)
        if g is None:
            continue
        upstream = g if fn.multi_output else (g,)
        for part in upstream:
            owned.discard(id(part))
        if fn.inputs is None:
            raise _freed_graph()
        if observe is not None:
            observe(fn, g)
        fn.slots_open = observe is None                  # see gradbuffer.slot_for
        in_grads = fn.backward(g) if profiler is None else profiler.backward(fn, g)
        fn.slots_open = False
        if type(in_grads) is not tuple:
            in_grads = (in_grads,)
        for inp, ig in zip(fn.inputs, in_grads):
            if ig is None or not inp.requires_grad:
                continue
            node = inp._ctx
            alone = _held_by_one(ig, in_grads, upstream, handed)
            if node is None:
                if observe is None:
                    _accumulate_leaf(inp, ig, fresh=alone)
                else:
                    observe(inp, ig)
            elif node.multi_output:
                slots = pending.get(node)
                if slots is None:
                    slots = pending[node] = [None] * node.n_outputs
                slots[inp._index] = _add(slots[inp._index], ig, alone, owned)
            else:
                pending[node] = _add(pending.get(node), ig, alone, owned)
            handed.add(id(ig))
        if not retain_graph:
            vars(fn).clear()
            fn.inputs = None


def _accumulate_leaf(t: Tensor, g: Any, fresh: bool) -> None:
    """Add gradient `g` into leaf t.grad.

    A leaf's .grad owns its memory (optimizers scale it in place, and later
    contributions are added into it in place). The first gradient goes into the
    leaf's slot when it has one (gradbuffer.py), else it is kept as it is when
    `fresh` (nothing else holds it), else copied. A node that put the gradient
    in place itself (gradbuffer.slot_for) returns the leaf's .grad or its slot:
    there is nothing left to do.
    """
    if g is t.grad:
        return
    if t.grad is not None:
        t.grad += g
    elif not gradbuffer.take_first(t, g):
        t.grad = g if fresh else g.copy()


def _held_by_one(g: Any, siblings: tuple, upstream: Any, handed: set[int]) -> bool:
    """Whether gradient `g`, just returned by a node's backward, is a fresh array
    that nothing else holds: not a view, not the node's own upstream gradient
    passed through, not returned twice (x + x), not handed on before."""
    return (g.base is None and id(g) not in handed and not any(g is u for u in upstream)
            and sum(s is g for s in siblings) == 1)


def _freed_graph() -> RuntimeError:
    return RuntimeError(
        "backward() through a graph that was already freed by an earlier backward(): "
        "pass retain_graph=True to the first call if you need to go back twice"
    )


def _add(prev: Any, g: Any, g_alone: bool, owned: set[int]) -> Any:
    """The running gradient sum prev + g (g alone when prev is None).

    The sum is made in place whenever one side is an array this walk may write:
    one it owns already (`owned`: made or taken over by this walk), or g when
    nothing else holds it (`g_alone`); that array is owned from then on. x + y
    and y + x are the same floats, so the result does not depend on which side.
    """
    if prev is None:
        if g_alone:
            owned.add(id(g))
        return g
    same = prev.shape == g.shape and prev.dtype == g.dtype
    if same and id(prev) in owned:
        prev += g
        return prev
    if same and g_alone:
        g += prev
        owned.add(id(g))
        return g
    total = prev + g
    owned.add(id(total))
    return total


def _topological_order(root: Function) -> list[Function]:
    """The nodes that lead to `root` (itself included), each one after all the
    nodes that make its inputs; backward's walk runs them in reverse.

    Iterative depth-first search: a chain of 10,000 ops must not hit Python's
    recursion limit.
    """
    order: list[Function] = []
    seen: set[Function] = set()
    stack: list[tuple[Function, bool]] = [(root, False)]
    while stack:
        fn, inputs_done = stack.pop()
        if inputs_done:
            order.append(fn)
            continue
        if fn in seen:
            continue
        seen.add(fn)
        stack.append((fn, True))
        if fn.inputs is not None:
            for inp in fn.inputs:
                node = inp._ctx if inp is not None else None
                if node is not None and inp.requires_grad and node not in seen:
                    stack.append((node, False))
    return order


# ---- creation ----------------------------------------------------------------
def tensor(data: Any, requires_grad: bool = False, dtype: Any = None, device: str | None = None) -> Tensor:
    """A new leaf tensor from an array, a list, a number or another tensor's data.

    device=None keeps the data where it already is, as torch.tensor does: a CuPy
    array (or a tensor on "cuda") stays on "cuda"; NumPy arrays, lists and numbers
    go to "cpu". Pass "cpu" or "cuda" to copy the data there.
    """
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def _shape_args(args: Sequence[Any]) -> tuple:
    """A shape (or axes) given as separate numbers, f(2, 3), or as one sequence, f((2, 3))."""
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)


def _filled(fill: str, shape: Sequence[int], dtype: Any, device: str, requires_grad: bool) -> Tensor:
    arr = getattr(np, fill)(_shape_args(shape), dtype=dtype or DEFAULT_DTYPE)
    return Tensor(arr, requires_grad=requires_grad, device=device)


def zeros(*shape: Any, dtype: Any = None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    return _filled("zeros", shape, dtype, device, requires_grad)


def ones(*shape: Any, dtype: Any = None, device: str = "cpu", requires_grad: bool = False) -> Tensor:
    return _filled("ones", shape, dtype, device, requires_grad)


def arange(start: float, stop: float | None = None, step: float = 1, dtype: Any = None,
           device: str = "cpu") -> Tensor:
    """Like numpy.arange; integers stay int64, floats become float32."""
    arr = np.arange(start, stop, step) if stop is not None else np.arange(start)
    if dtype is None and arr.dtype.kind == "f":
        dtype = DEFAULT_DTYPE
    return Tensor(arr, dtype=dtype, device=device)


from . import ops  # noqa: E402  (ops builds on Tensor and Function defined above)
