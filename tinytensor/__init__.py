"""tinytensor: reverse-mode automatic differentiation on NumPy (CuPy on a GPU).

    import tinytensor as tt
    x = tt.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    x.grad  # array([2., 4.], dtype=float32)

The modules in reading order, the engine and its layers first:

    tensor      Tensor, Function (one node of the graph), backward's walk, grads_of
    ops         the primitives (+, *, @, sum, reshape, getitem, ...), each backward beside its forward
    functional  fused ops (softmax, layer norm, attention, linear, ...): one node, a backward derived by hand
    nn          Module and the layers that hold parameters (Linear, Embedding, LayerNorm, ...)
    optim       SGD, AdamW, gradient clipping, the cosine schedule
    gradbuffer  gradient slots: the optimizer's flat storage that backward writes into

and the tools around them:

    gradcheck   a backward against central finite differences
    check       python -m tinytensor check: every op through gradcheck, as a table
    graph       draw_graph: the graph behind a tensor, with its saved buffers and gradient norms
    profiler    time and memory per op, forward and backward
    serialize   save / load tensors as safetensors
    reference   every fused op composed from primitives, and backward's walk as micrograd writes it
    random      the seeded generator behind randn, rand and dropout
    backend     NumPy or CuPy: where arrays live; the allocator setting
"""
from . import functional, nn, optim
from .backend import cuda_is_available, get_array_module, tune_allocator
from .gradcheck import GradcheckError, gradcheck
from .graph import draw_graph
from .ops import concatenate, split, stack, sum_to_shape, unbind, where
from .profiler import profile, profile_steps
from .serialize import load, save
from .random import get_rng_state, manual_seed, rand, randn, set_rng_state
from .tensor import Function, Tensor, arange, grads_of, is_grad_enabled, no_grad, ones, tensor, zeros

__all__ = [
    "Function", "GradcheckError", "Tensor", "arange", "concatenate", "cuda_is_available", "draw_graph",
    "functional", "get_array_module", "get_rng_state", "gradcheck", "grads_of", "is_grad_enabled", "load", "manual_seed", "nn",
    "no_grad", "optim", "ones", "profile", "profile_steps", "rand", "randn", "save", "set_rng_state", "split", "stack",
    "sum_to_shape", "tensor", "tune_allocator", "unbind", "where", "zeros",
]
