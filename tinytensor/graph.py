"""See the graph behind a tensor: `draw_graph(y, "graph.svg")`.

The graph is written as Graphviz DOT text and rendered by the `dot` program
when it is installed (no Python dependency); without it the DOT text is
written next to the requested path, with a note saying how to render it.

One box per tensor. A node's output shows the op (its Function class), the
output's shape and dtype, and the buffers the node saved for backward (with
"= input 0" or "view of input 0" when a buffer is an input's own memory, so no
new memory). A leaf shows its name when `names` gives one (a model's
`dict(named_parameters())`), a constant (an input that needs no gradient) is
grey. Each box also shows the norm of the gradient backward sends to it, the
loss's gradient with respect to that tensor.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .backend import get_array_module
from .tensor import Tensor, _topological_order, grads_of

_FORMATS = ("svg", "png", "pdf")


def draw_graph(y: Tensor, path: str | Path = "graph.svg", names: Mapping[str, Tensor] | None = None,
               grad: Any = None) -> Path:
    """Write the graph that computed `y` to `path` (.svg, .png, .pdf, or .dot for the text); return the path written.

    Gradient norms come from backward's walk run once more by `grads_of`, from
    dL/dy = `grad` (1 for a one-element y; left out for a bigger y without
    `grad`). Nothing is written to any `.grad`. So the graph must still hold
    its saved buffers: draw it before `backward()`, or after
    `backward(retain_graph=True)`.
    """
    if y._ctx is not None and y._ctx.inputs is None:
        raise RuntimeError("draw_graph: the graph behind this tensor was freed by backward(); draw it before "
                           "backward(), or call backward(retain_graph=True) first")
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in _FORMATS + ("dot",):
        raise ValueError(f"draw_graph: path must end in .svg, .png, .pdf or .dot, got {path.name!r}")
    order = _tensors_in_order(y)
    norms = _gradient_norms(y, order, grad) if y.requires_grad and (grad is not None or y.data.size == 1) else {}
    text = to_dot(order, norms, {id(t): name for name, t in (names or {}).items()})
    if fmt == "dot":
        path.write_text(text)
        return path
    dot = shutil.which("dot")
    if dot is None:
        written = path.with_suffix(".dot")
        written.write_text(text)
        print(f"draw_graph: Graphviz's `dot` is not installed, so the graph is in {written} as DOT text; render it "
              f"with `dot -T{fmt} {written} -o {path}` (apt-get install graphviz, or brew install graphviz)",
              file=sys.stderr)
        return written
    subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=text, text=True, check=True)
    return path


def _tensors_in_order(y: Tensor) -> list[Tensor]:
    """Every tensor y was computed from (constants too), each after its inputs:
    the inputs of the engine's nodes in its topological order, then y."""
    order: list[Tensor] = []
    placed: set[int] = set()
    for fn in _topological_order(y._ctx) if y._ctx is not None else ():
        for t in fn.inputs:
            if t is not None and id(t) not in placed:
                placed.add(id(t))
                order.append(t)
    return order + [y]


def _gradient_norms(y: Tensor, order: list[Tensor], grad: Any) -> dict[int, float]:
    """id(tensor) -> |dL/dtensor| (the Frobenius norm) for each tensor that needs a gradient, by backward's walk."""
    named = {str(i): t for i, t in enumerate(order) if t.requires_grad}
    return {id(named[k]): float(np.linalg.norm(g.ravel())) for k, g in grads_of(y, named, grad).items()}


def to_dot(order: list[Tensor], norms: dict[int, float], names: dict[int, str]) -> str:
    """The DOT text of a graph: tensors `order`ed inputs first, gradient norms and leaf names by id."""
    ids = {id(t): f"t{i}" for i, t in enumerate(order)}
    lines = ["digraph tinytensor {", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9, color="#555555"];']
    for t in order:
        fn = t._ctx
        shape = f"{t.shape} {t.dtype}"
        if fn is not None:
            rows = [type(fn).__name__, f"out {shape}"] + _saved(fn, t)
            colour = "#fff2cc"
        elif t.requires_grad:
            rows = [names.get(id(t), "leaf"), shape]
            colour = "#dae8fc"
        else:
            rows = [names.get(id(t), "constant"), shape]
            colour = "#eeeeee"
        if id(t) in norms:
            rows.append(f"|grad| = {norms[id(t)]:.4g}")
        label = "\\n".join(r.replace("\\", "\\\\").replace('"', '\\"') for r in rows)
        lines.append(f'  {ids[id(t)]} [label="{label}", fillcolor="{colour}"];')
        if fn is not None:
            many = sum(inp is not None for inp in fn.inputs) > 1
            for i, inp in enumerate(fn.inputs):
                if inp is not None:  # None: an optional input left out
                    lines.append(f"  {ids[id(inp)]} -> {ids[id(t)]}" + (f' [label="{i}"];' if many else ";"))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _saved(fn: Any, out: Tensor) -> list[str]:
    """One line per array the node keeps for backward, marked when it is an input's or the output's memory."""
    rows = []
    for name, value in vars(fn).items():
        arrays = _arrays(value)
        if not arrays:
            continue
        if len(arrays) > 1:
            kib = sum(a.nbytes for a in arrays) / 1024
            rows.append(f"saved {name}: {len(arrays)} arrays, {kib:.3g} KiB")
            continue
        a = arrays[0]
        rows.append(f"saved {name} {tuple(a.shape)}{_memory_of(a, fn.inputs, out)}")
    return rows


def _arrays(value: Any) -> list[Any]:
    if hasattr(value, "shape") and hasattr(value, "nbytes") and getattr(value, "ndim", 0) > 0:
        return [value]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _arrays(v)]
    return []


def _memory_of(a: Any, inputs: tuple[Tensor | None, ...], out: Tensor) -> str:
    xp = get_array_module(a)
    for i, inp in enumerate(inputs):
        if inp is None:
            continue
        if a is inp.data:
            return f" = input {i}"
        if xp.may_share_memory(a, inp.data):
            return f" view of input {i}"
    return " = output" if a is out.data or xp.may_share_memory(a, out.data) else ""
