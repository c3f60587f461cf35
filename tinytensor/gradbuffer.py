"""Gradient slots: where backward writes a parameter's gradient when an optimizer owns its memory.

An optimizer keeps its parameters' values, gradients and state each in one
contiguous array (`FlatStorage`), so a step is a few vectorised passes over
many parameters, and all the gradients can be reduced at once (an MPI
Allreduce of `opt.flat_grad`). Each parameter is then *bound* to its slot, a
view of the flat gradient array shaped like the parameter:

  - the engine puts a bound leaf's first gradient of a backward into its slot
    (`take_first`), so `p.grad` is the slot, not a new array;
  - a backward that makes a parameter's whole gradient in one operation (the
    matmul of `linear`, the scatter of `embedding`) asks `slot_for` and writes
    straight into the slot (or adds into .grad when there is one already), so
    no (out, in) array is made only to be copied there;
  - the optimizer binds its parameters when it builds its storage, `unbind`
    undoes it (a parameter moved by `nn.Module.to` no longer lives there).

The values are the same with or without slots, bit for bit: only where the
floats are stored changes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backend import device_of, get_array_module, to_device

if TYPE_CHECKING:
    from .tensor import Function, Tensor


def slot(p: "Tensor") -> Any:
    """The array p's gradient is written into, or None when p is not bound."""
    return p._grad_buffer


def bind(p: "Tensor", array: Any) -> None:
    """From now on backward writes p's gradient into `array` (shaped like p); a gradient p holds moves there."""
    p._grad_buffer = array
    if p.grad is not None:
        array[...] = to_device(p.grad, device_of(array))
        p.grad = array


def unbind(p: "Tensor") -> None:
    """Backward makes p's gradient a new array again."""
    p._grad_buffer = None


def take_first(t: "Tensor", g: Any) -> bool:
    """Make gradient `g` leaf t's .grad in its slot, when t is bound; whether it was."""
    s = t._grad_buffer
    if s is None:
        return False
    if g is not s:  # a backward that used slot_for wrote there itself
        s[...] = g
    t.grad = s
    return True


def slot_for(node: "Function", i: int) -> tuple[Any, bool]:
    """(array, holds_gradient): where node's backward may put input i's gradient
    itself instead of returning a new array to be added or copied there, or
    (None, False).

    For a leaf that appears once among the inputs: its .grad, to add into
    (holds_gradient True), or, while it has none, its slot, to write into
    (False). A backward that uses the array returns it, and the engine then
    takes it as it is. Only while backward()'s walk runs the node (it sets
    `node.slots_open` around the call): the same walk run only to look
    (grads_of, draw_graph), or any other caller of a backward, gets (None,
    False), so .grad stays untouched.
    """
    t = node.inputs[i]
    if not getattr(node, "slots_open", False) or t._ctx is not None or sum(u is t for u in node.inputs) > 1:
        return None, False
    if t.grad is not None:
        return t.grad, True
    return t._grad_buffer, False


class FlatStorage:
    """The parameters' values, gradients and state arrays, each as one contiguous
    1-D array with the parameters side by side in order; every parameter's
    `.data`, gradient slot and state arrays are views into them."""

    def __init__(self, params: list["Tensor"], array_state: tuple[str, ...], state: dict[int, dict[str, Any]]):
        first = params[0].data
        xp, dtype, self.device = get_array_module(first), first.dtype, device_of(first)
        self.offsets: dict[int, tuple[int, int]] = {}
        end = 0
        for p in params:
            self.offsets[id(p)] = (end, end + p.size)
            end += p.size
        self.data = xp.empty(end, dtype=dtype)
        self.grad = xp.empty(end, dtype=dtype)
        # name -> flat state array, made when a parameter first brings that state
        # (an SGD without momentum never does), each slot filled by its parameter
        self.state: dict[str, Any] = {}
        self.array_state, self.size = array_state, end
        self.views: list[Any] = []
        for p in params:
            view = self._view(self.data, p)
            view[...] = p.data
            p.data = view
            self.views.append(view)
            bind(p, self._view(self.grad, p))
            if id(p) in state:
                self.adopt(p, state[id(p)])

    def _view(self, flat: Any, p: "Tensor") -> Any:
        lo, hi = self.offsets[id(p)]
        return flat[lo:hi].reshape(p.shape)

    def span(self, p: "Tensor") -> tuple[int, int]:
        return self.offsets[id(p)]

    def adopt(self, p: "Tensor", state: dict[str, Any]) -> None:
        """Move p's state arrays into their flat slots (the dict then holds views)."""
        xp = get_array_module(self.data)
        for name, value in state.items():
            if name in self.array_state:
                if name not in self.state:
                    self.state[name] = xp.zeros(self.size, dtype=self.data.dtype)
                view = self._view(self.state[name], p)
                view[...] = to_device(value, self.device)
                state[name] = view

    def holds(self, params: list["Tensor"]) -> bool:
        """Whether every parameter's .data is still its view into this storage."""
        return len(params) == len(self.views) and all(p.data is v for p, v in zip(params, self.views))
