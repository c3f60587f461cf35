# %% [markdown]
# # Exercise 1: a scalar autodiff engine from nothing
#
# Write `Value`, a number that remembers how it was made, and the walk that
# sends the gradient back: micrograd's size (`+`, `*`, `tanh`, the
# topological order). Each operation builds its output and a `_backward`
# closure; the closure adds the output's gradient, times the local
# derivative, into each input's `.grad`. Add (`+=`), never assign: a value
# used twice gets a gradient from each use.
#
# Check it with `python -m tinytensor exercise 1`: the same expression is
# built with tinytensor below, and the checker compares your `.grad` of every
# value with tinytensor's gradient of it.

# %%
import math

import numpy as np

import tinytensor as tt


class Value:
    def __init__(self, data, children=()):
        self.data = float(data)
        self.grad = 0.0                       # dL/d(this value), filled in by backward()
        self._children = children             # the values this one was computed from
        self._backward = lambda: None         # sends self.grad to the children

    def __add__(self, other):
        out = Value(self.data + other.data, (self, other))

        def _backward():
            self.grad += out.grad  # answer: d(a + b)/da = 1
            other.grad += out.grad  # answer: d(a + b)/db = 1
        out._backward = _backward
        return out

    def __mul__(self, other):
        out = Value(self.data * other.data, (self, other))

        def _backward():
            self.grad += other.data * out.grad  # answer: d(a b)/da = b
            other.grad += self.data * out.grad  # answer: d(a b)/db = a
        out._backward = _backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,))

        def _backward():
            self.grad += (1 - t * t) * out.grad  # answer: d tanh(a)/da = 1 - tanh(a)^2
        out._backward = _backward
        return out

    def backward(self):
        order = topological_order(self)
        self.grad = 1.0                       # dL/dL
        for v in reversed(order):             # from the loss back: each value after every use of it
            v._backward()


def topological_order(root):
    """Every value root was computed from, each after its children (root last)."""
    # answer { return ...
    order, seen = [], set()

    def visit(v):
        if id(v) not in seen:
            seen.add(id(v))
            for child in v._children:
                visit(child)
            order.append(v)
    visit(root)
    return order
    # answer }


# %% [markdown]
# A neuron, then a little more, so that one value (`o`) is used twice and one
# input (`x1`) reaches the loss along two paths.

# %%
numbers = {"x1": 0.8, "x2": -1.3, "w1": -0.6, "w2": 0.9, "b": 0.4}
V = {name: Value(x) for name, x in numbers.items()}
V["x1w1"] = V["x1"] * V["w1"]
V["x2w2"] = V["x2"] * V["w2"]
V["s"] = V["x1w1"] + V["x2w2"]
V["n"] = V["s"] + V["b"]
V["o"] = V["n"].tanh()
V["oo"] = V["o"] * V["o"]
V["L"] = V["oo"] + V["o"] * V["x1"]
V["L"].backward()

# %% [markdown]
# The same expression in tinytensor (0-d float64 tensors), for the checker.

# %%
forward = {name: tt.tensor(x, requires_grad=True, dtype="float64") for name, x in numbers.items()}
T = forward
T["x1w1"] = T["x1"] * T["w1"]
T["x2w2"] = T["x2"] * T["w2"]
T["s"] = T["x1w1"] + T["x2w2"]
T["n"] = T["s"] + T["b"]
T["o"] = T["n"].tanh()
T["oo"] = T["o"] * T["o"]
T["L"] = T["oo"] + T["o"] * T["x1"]
loss = T["L"]
assert np.isclose(loss.item(), V["L"].data)
grads = {name: np.float64(v.grad) for name, v in V.items()}

# %% [markdown]
# Run this file (`python 1_scalar_engine.py`) or this cell to see the table; the
# same as `python -m tinytensor exercise 1`.

# %%
if __name__ == "__main__":
    from tinytensor.exercise import report

    report(forward, loss, grads)
