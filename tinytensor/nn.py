"""Neural-network building blocks: `Module`, `Parameter` and the layers a GPT needs.

A `Module` finds its own weights: assigning a `Parameter` or another `Module`
to an attribute registers it, so `model.parameters()` and
`model.state_dict()` walk the whole tree without any bookkeeping in the
subclass. Names are dotted paths such as `blocks.0.attn.weight`.

Initial values are drawn from tinytensor's seeded generator on the CPU in
float64, then cast and moved, so `tt.manual_seed(s)` gives identical weights
on every device and in every dtype.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np

from . import functional as F
from . import gradbuffer
from .backend import to_device
from .random import generator
from .tensor import DEFAULT_DTYPE, Tensor


class Parameter(Tensor):
    """A tensor that is a module's learnable weight: a leaf that requires grad."""

    __slots__ = ()

    def __init__(self, data: Any, dtype: Any = None, device: str | None = None):
        super().__init__(data, requires_grad=True, dtype=dtype, device=device)


_skip_init = False


@contextmanager
def skip_init() -> Iterator[None]:
    """Modules built inside get their weights allocated but not drawn (the generator does not
    advance): for a model whose weights are loaded right after, where drawing is wasted time."""
    global _skip_init
    previous, _skip_init = _skip_init, True
    try:
        yield
    finally:
        _skip_init = previous


def init_skipped() -> bool:
    """Whether modules are being built inside skip_init()."""
    return _skip_init


def _drawn(draw: Callable[[tuple[int, ...]], np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """draw(shape), or an uninitialised array of the parameter's dtype inside skip_init()."""
    return np.empty(shape, dtype=dtype or DEFAULT_DTYPE) if _skip_init else draw(shape)


def _new_parameter(values: np.ndarray, dtype: Any, device: str) -> Parameter:
    """Wrap float64 CPU init values as a parameter of the module's dtype and device."""
    return Parameter(values, dtype=dtype or DEFAULT_DTYPE, device=device)


class LoadResult(NamedTuple):
    """What `load_state_dict(strict=False)` skipped."""

    missing: list[str]
    unexpected: list[str]


class Module:
    """Base class of every layer and model.

    Subclasses call `super().__init__()` first, assign parameters and
    sub-modules as attributes and define `forward`; `module(x)` calls it.
    """

    def __init__(self) -> None:
        # written through __dict__ because our own __setattr__ reads these
        self.__dict__["_parameters"] = {}
        self.__dict__["_modules"] = {}
        self.__dict__["_buffers"] = {}
        self.__dict__["_non_persistent"] = set()
        self.training = True

    # ---- registration ----------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__ and isinstance(value, (Parameter, Module)):
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() ran: call super().__init__() first"
            )
        if isinstance(value, Parameter):
            registry = "_parameters"
        elif isinstance(value, Module):
            registry = "_modules"
        elif name in self.__dict__.get("_buffers", ()) and value is not None:
            registry = "_buffers"  # re-assigning a buffer keeps it a buffer
            if not isinstance(value, Tensor):  # bare values go where the buffer lives (a Tensor keeps its device)
                value = Tensor(value, device=self.__dict__["_buffers"][name].device)
        else:
            registry = None
        # a name is registered in at most one place, so rebinding (e.g. bias = None) unregisters
        for reg in ("_parameters", "_modules", "_buffers"):
            self.__dict__.get(reg, {}).pop(name, None)
        if registry is not None:
            self.__dict__[registry][name] = value
        # registered members are plain attributes too, so reading one (a forward does
        # it many times per call) is a native lookup rather than a __getattr__ call
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for reg in ("_parameters", "_modules", "_buffers"):
            if self.__dict__[reg].pop(name, None) is not None:
                self._non_persistent.discard(name)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: Any, persistent: bool = True) -> None:
        """Attach a tensor that is state but not a learnable weight (it moves with
        `to()`); a persistent buffer is also saved in `state_dict()`."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("call super().__init__() before register_buffer()")
        for reg in ("_parameters", "_modules"):
            self.__dict__[reg].pop(name, None)
        value = value if isinstance(value, Tensor) else Tensor(value)
        self._buffers[name] = value
        object.__setattr__(self, name, value)
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    # ---- walking the tree ------------------------------------------------
    def named_modules(self, prefix: str = "") -> list[tuple[str, "Module"]]:
        """(dotted name, module) for this module ("") and every descendant, each once."""
        found: list[tuple[str, Module]] = []
        seen: set[int] = set()

        def visit(module: Module, name: str) -> None:
            if id(module) in seen:
                return
            seen.add(id(module))
            found.append((name, module))
            for child_name, child in module._modules.items():
                visit(child, f"{name}.{child_name}" if name else child_name)

        visit(self, prefix)
        return found

    def modules(self) -> list["Module"]:
        return [m for _, m in self.named_modules()]

    def _named_members(self, registry: str) -> list[tuple[str, Any, "Module", str]]:
        """(dotted name, member, owner, local name) for a registry over the whole tree.
        A member shared by two modules (weight tying) appears once, under its first name."""
        found = []
        seen: set[int] = set()
        for module_name, module in self.named_modules():
            for name, member in module.__dict__[registry].items():
                if id(member) in seen:
                    continue
                seen.add(id(member))
                found.append((f"{module_name}.{name}" if module_name else name, member, module, name))
        return found

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs, e.g. ("blocks.0.attn.weight", p)."""
        return [(name, p) for name, p, _, _ in self._named_members("_parameters")]

    def parameters(self) -> list[Parameter]:
        return [p for _, p, _, _ in self._named_members("_parameters")]

    def named_buffers(self) -> list[tuple[str, Tensor]]:
        return [(name, b) for name, b, _, _ in self._named_members("_buffers")]

    def num_parameters(self) -> int:
        """How many numbers the model learns (a tied weight counts once)."""
        return sum(p.size for p in self.parameters())

    # ---- state -----------------------------------------------------------
    def _state_tensors(self) -> dict[str, Tensor]:
        """What state_dict() saves: every parameter and every persistent buffer."""
        state: dict[str, Tensor] = dict(self.named_parameters())
        for name, buf, owner, local in self._named_members("_buffers"):
            if local not in owner._non_persistent:
                state[name] = buf
        return state

    def state_dict(self) -> dict[str, Any]:
        """Name -> array for every parameter and persistent buffer.

        The arrays are copies (on the module's device), so later training does
        not change a snapshot taken now.
        """
        return {name: t.data.copy() for name, t in self._state_tensors().items()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> LoadResult:
        """Copy `state` (name -> array or Tensor) into the parameters and buffers in place.

        Values are cast to each parameter's dtype and moved to its device; the
        parameter objects stay the same, so an optimizer holding them keeps
        working. Every problem (missing, unexpected or wrongly shaped keys) is
        reported in one error before anything is copied. With strict=False
        missing and unexpected keys are allowed and returned; a wrong shape is
        always an error.
        """
        own = self._state_tensors()
        values = {k: _as_host_or_device_array(v) for k, v in state.items()}
        missing = [k for k in own if k not in values]
        unexpected = [k for k in values if k not in own]
        wrong_shape = [
            f"{k}: checkpoint has {tuple(values[k].shape)}, model has {own[k].shape}"
            for k in own if k in values and tuple(values[k].shape) != own[k].shape
        ]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if wrong_shape:
            problems.append("wrong shapes: " + "; ".join(wrong_shape))
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__} failed:\n  " + "\n  ".join(problems))
        for name, t in own.items():
            if name in values:
                # slice assignment writes into the existing array and casts its dtype
                t.data[...] = to_device(values[name], t.device)
        return LoadResult(missing, unexpected)

    # ---- modes and devices -------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set training mode (dropout active) on this module and all descendants."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        """Evaluation mode: `train(False)`."""
        return self.train(False)

    @contextmanager
    def evaluating(self) -> Iterator["Module"]:
        """`with model.evaluating():` eval mode inside, the mode it had before after, even on an error."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (None, so the next backward writes fresh)."""
        for p in self.parameters():
            p.grad = None

    def to(self, device: str | None = None, dtype: Any = None) -> "Module":
        """Move every parameter and buffer to `device` and/or cast the floating ones
        to `dtype`, in place: the parameter objects stay the same. Create the
        optimizer after moving, since its state lives where the parameters were."""

        def convert(arr: Any) -> Any:
            if device is not None:
                arr = to_device(arr, device)
            if dtype is not None and arr.dtype.kind == "f":
                arr = arr.astype(dtype, copy=False)
            return arr

        tensors = self.parameters() + [b for _, b in self.named_buffers()]
        for t in tensors:
            new = convert(t.data)
            if new is not t.data:
                # an optimizer's flat gradient slot stays behind: it rebuilds its storage at its next step
                gradbuffer.unbind(t)
            t.data = new
            if t.grad is not None:
                t.grad = convert(t.grad)
        return self

    # ---- calling -----------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        """The layer's settings, shown inside its repr."""
        return ""

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._modules:
            return head + ")"
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self._modules.items()]
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _as_host_or_device_array(value: Any) -> Any:
    """A state-dict value as an array (NumPy or CuPy), whatever was passed."""
    if isinstance(value, Tensor):
        return value.data
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return value
    return np.asarray(value)


# ---- layers ------------------------------------------------------------------
class Linear(Module):
    """y = x @ W^T + b with W of shape (out_features, in_features).

    Init as PyTorch's default: W and b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)),
    which keeps the output variance about that of the input at the start.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = None, device: str = "cpu"):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear needs in_features and out_features >= 1, got ({in_features}, {out_features})")
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        rng = generator()
        uniform = lambda shape: rng.uniform(-bound, bound, shape)  # noqa: E731
        self.weight = _new_parameter(_drawn(uniform, (out_features, in_features), dtype), dtype, device)
        self.bias = _new_parameter(_drawn(uniform, (out_features,), dtype), dtype, device) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: row `i` of `weight` (num_embeddings, embedding_dim) is the
    vector for id `i`. Init as PyTorch's default: N(0, 1)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: Any = None, device: str = "cpu"):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = _new_parameter(
            _drawn(generator().standard_normal, (num_embeddings, embedding_dim), dtype), dtype, device
        )

    def forward(self, ids: Any) -> Tensor:
        return F.embedding(ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalise the last axis to zero mean and unit variance, then scale by
    `weight` (init ones) and shift by `bias` (init zeros; omitted with bias=False)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, dtype: Any = None, device: str = "cpu"):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = _new_parameter(np.ones(dim), dtype, device)
        self.bias = _new_parameter(np.zeros(dim), dtype, device) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(Module):
    """Divide the last axis by its root mean square, then scale by `weight` (init ones)."""

    def __init__(self, dim: int, eps: float = 1e-5, dtype: Any = None, device: str = "cpu"):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = _new_parameter(np.ones(dim), dtype, device)

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """In training, zero each element with probability p and scale the rest by
    1/(1-p); in eval mode, the identity."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ---- containers ----------------------------------------------------------------
class ModuleList(Module):
    """A list of modules, registered under the names "0", "1", ..."""

    def __init__(self, modules: Iterable[Module] = ()):
        super().__init__()
        self.extend(modules)

    def append(self, module: Module) -> "ModuleList":
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__} holds Modules, got {type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ModuleList(list(self)[index])
        i = index + len(self) if index < 0 else index
        if not 0 <= i < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {len(self)}")
        return self._modules[str(i)]


class Sequential(ModuleList):
    """Modules applied one after another: Sequential(a, b)(x) == b(a(x))."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def __getitem__(self, index: int | slice) -> Any:
        item = super().__getitem__(index)
        return Sequential(*item) if isinstance(index, slice) else item

    def forward(self, x: Any) -> Any:
        for module in self:
            x = module(x)
        return x
