"""Check every op's backward against finite differences: `python -m tinytensor check`.

Each `OpCheck` below is one op, a primitive of ops.py or a fused op of
functional.py, named by its Function class, with a few sets of input shapes
(broadcasting and sizes of 1 among them). For every set, the gradient that the
op's backward gives for each float input is compared, in float64, with central
finite differences (`gradcheck.gradient_error`). The op passes when the worst
error over its sets is at most `TOLERANCE`.

Checking an op of your own: put a list named CHECKS of `OpCheck`s in a module
and run `python -m tinytensor check --add your_module` (docs/engine.md).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from . import functional as F
from . import ops
from .backend import get_array_module
from .gradcheck import gradient_error
from .random import get_rng_state, manual_seed, set_rng_state
from .tensor import Tensor

Shape = tuple[int, ...]

# float64 central differences with eps = 1e-6 agree with a right backward to about
# 1e-9; a wrong one is off by far more than this
TOLERANCE = 1e-5


@dataclass(frozen=True)
class OpCheck:
    """One op to check: `fn` takes one float64 tensor per shape of a set, drawn uniform in [low, high]."""

    name: str
    fn: Callable[..., Tensor]
    shapes: Sequence[Sequence[Shape]]
    low: float = -2.0
    high: float = 2.0
    eps: float = 1e-6


@dataclass(frozen=True)
class Result:
    name: str
    shapes: str
    error: float
    passed: bool
    problem: str = ""


def _xp(t: Tensor) -> Any:
    return get_array_module(t.data)


def _ids(n: int, shape: Shape, t: Tensor) -> Any:
    """Integer ids 0..n-1 of `shape` with repeats, on t's device (no randomness: a check is repeatable)."""
    return _xp(t).asarray((np.arange(int(np.prod(shape))) * 7 % n).reshape(shape))


def _targets(logits: Tensor) -> Any:
    """One target per row of logits (..., V), the second one ignored (-100)."""
    t = np.arange(logits.size // logits.shape[-1]) * 3 % logits.shape[-1]
    t[1:2] = -100
    return _xp(logits).asarray(t.reshape(logits.shape[:-1]))


def _seeded(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """fn with the generator reseeded on each call: dropout draws the same mask every time."""
    def run(*args: Tensor) -> Tensor:
        manual_seed(0)
        return fn(*args)
    return run


def _mask(shape: Shape, t: Tensor) -> Any:
    """A fixed boolean pattern of `shape`, True at about two thirds of the places and on the first column."""
    m = np.arange(int(np.prod(shape))).reshape(shape) % 3 != 1
    m[..., 0] = True
    return _xp(t).asarray(m)


PRIMITIVES = [
    OpCheck("Add", lambda a, b: a + b, [[(3, 4), (3, 4)], [(2, 3, 1), (4,)], [(1,), ()]]),
    OpCheck("Sub", lambda a, b: a - b, [[(3, 4), (3, 4)], [(4,), (2, 1, 4)]]),
    OpCheck("Mul", lambda a, b: a * b, [[(3, 4), (3, 4)], [(2, 3, 1), (1, 4)]]),
    OpCheck("Div", lambda a, b: a / b, [[(3, 4), (3, 4)], [(2, 3), (3,)]], low=0.5, high=2.0),
    OpCheck("Neg", lambda x: -x, [[(3, 4)], [()]]),
    OpCheck("PowScalar", lambda x: x ** 3 + x ** 0.5 + x ** 0, [[(3, 4)], [(1,)]], low=0.5, high=2.0),
    OpCheck("Pow", lambda a, b: a ** b, [[(3, 4), (3, 4)], [(2, 3), (1,)]], low=0.5, high=2.0),
    OpCheck("MatMul", lambda a, b: a @ b,
            [[(3, 4), (4, 2)], [(2, 3, 4), (4, 5)], [(4,), (4, 3)], [(2, 1, 3, 4), (3, 4, 2)], [(4,), (4,)]]),
    OpCheck("Sum", lambda x: x.sum(axis=1) + x.sum(), [[(3, 4)], [(2, 1, 3)]]),
    OpCheck("Mean", lambda x: x.mean(axis=(0, 2), keepdims=True) * x.mean(), [[(2, 3, 4)], [(1, 1, 1)]]),
    OpCheck("Max", lambda x: x.max(axis=-1) + x.max(), [[(3, 4)], [(2, 1, 5)]]),
    OpCheck("Exp", lambda x: x.exp(), [[(3, 4)], [()]]),
    OpCheck("Log", lambda x: x.log(), [[(3, 4)], [(1,)]], low=0.5, high=3.0),
    OpCheck("Sqrt", lambda x: x.sqrt(), [[(3, 4)], [(1,)]], low=0.5, high=3.0),
    OpCheck("Tanh", lambda x: x.tanh(), [[(3, 4)], [()]]),
    OpCheck("Relu", lambda x: x.relu(), [[(3, 4)], [(1,)]]),
    OpCheck("Clip", lambda x: x.clip(-1.0, 0.5) + x.clip(max=1.0), [[(3, 4)], [(5,)]]),
    OpCheck("Where", lambda a, b: ops.where(_mask(np.broadcast_shapes(a.shape, b.shape), a), a, b),
            [[(3, 4), (3, 4)], [(3, 1), (4,)]]),
    OpCheck("MaskedFill", lambda x: x.masked_fill(_mask(x.shape, x), -1.0), [[(3, 4)], [(2, 1)]]),
    OpCheck("Reshape", lambda x: x.reshape(-1, 2) * x.reshape(-1, 2), [[(3, 4)], [(2, 1)]]),
    OpCheck("Transpose", lambda x: x.transpose(2, 0, 1) * x.T.swapaxes(1, 2), [[(2, 3, 4)], [(1, 1, 2)]]),
    OpCheck("BroadcastTo", lambda x: x.expand(2, 3, 4), [[(3, 1)], [(4,)], [()]]),
    OpCheck("GetItem", lambda x: (x[1:, ::2] ** 2).sum() + (x[_xp(x).asarray([0, 2, 0])] ** 2).sum(),
            [[(3, 4)], [(4, 1)]]),
    OpCheck("Concatenate", lambda a, b: ops.concatenate([a, b, a], axis=1), [[(2, 3), (2, 1)], [(1, 2), (1, 4)]]),
    OpCheck("Stack", lambda a, b: ops.stack([a, b], axis=-1), [[(2, 3), (2, 3)], [(1,), (1,)]]),
    OpCheck("Split", lambda x: sum((p * (i + 1.0)).sum() ** 2 for i, p in enumerate(x.split([1, 2], axis=-1)))
            + (x.unbind(0)[-1] ** 2).sum(), [[(3, 3)], [(1, 3)]]),
    OpCheck("ToDevice", lambda x: ops.ToDevice.apply(x, device="cpu"), [[(3, 4)]]),
    # a float32 round trip: exact for a linear map with a large step, rounding noise 1e-7 / 0.1
    OpCheck("Cast", lambda x: ops.Cast.apply(ops.Cast.apply(x, dtype=np.float32), dtype=np.float64),
            [[(3, 4)]], eps=0.1),
]

FUSED = [
    OpCheck("SoftmaxFunction", lambda x: F.softmax(x) + F.softmax(x, axis=0), [[(3, 5)], [(2, 1, 4)], [(1,)]],
            low=-4.0, high=4.0),
    OpCheck("LogSoftmaxFunction", lambda x: F.log_softmax(x) + F.log_softmax(x, axis=0), [[(3, 5)], [(2, 1, 4)]],
            low=-4.0, high=4.0),
    OpCheck("CrossEntropyFunction (mean, one ignored)", lambda x: F.cross_entropy(x, _targets(x)),
            [[(4, 5)], [(2, 3, 6)], [(2, 1)]], low=-4.0, high=4.0),
    OpCheck("CrossEntropyFunction (sum, none)",
            lambda x: F.cross_entropy(x, _targets(x), reduction="sum")
            + F.cross_entropy(x, _targets(x), reduction="none").sum(), [[(4, 5)]], low=-4.0, high=4.0),
    OpCheck("LayerNormFunction", lambda x, w, b: F.layer_norm(x, w, b),
            [[(3, 6), (6,), (6,)], [(2, 2, 4), (4,), (4,)]]),
    OpCheck("LayerNormFunction (no weight, no bias)", lambda x: F.layer_norm(x, None, None, eps=1e-3),
            [[(3, 6)], [(2, 1)]]),
    OpCheck("RMSNormFunction", lambda x, w: F.rms_norm(x, w), [[(3, 6), (6,)], [(2, 2, 1), (1,)]]),
    OpCheck("RMSNormFunction (no weight)", lambda x: F.rms_norm(x, None), [[(3, 6)]]),
    OpCheck("GeluTanhFunction", lambda x: F.gelu(x), [[(3, 5)], [()]], low=-5.0, high=5.0),
    OpCheck("GeluErfFunction", lambda x: F.gelu(x, approximate="none"), [[(3, 5)], [()]], low=-5.0, high=5.0),
    OpCheck("SiluFunction", F.silu, [[(3, 5)], [()]], low=-5.0, high=5.0),
    OpCheck("ScaledDotProductAttentionFunction (causal, Tq <= Tk)", F.scaled_dot_product_attention,
            [[(1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 2)], [(2, 1, 2, 3), (2, 1, 5, 3), (2, 1, 5, 3)]]),
    OpCheck("ScaledDotProductAttentionFunction (mask, dropout)",
            _seeded(lambda q, k, v: F.scaled_dot_product_attention(
                q, k, v, causal=False, attn_mask=_mask(q.shape[-2:-1] + k.shape[-2:-1], q), dropout_p=0.3)),
            [[(1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 3)], [(1, 6, 3, 2), (1, 3, 4, 2), (1, 3, 4, 2)]]),
    # 64 query rows go through causal attention in 2 blocks, skipping scores above the diagonal
    OpCheck("ScaledDotProductAttentionFunction (blocked causal)", F.scaled_dot_product_attention,
            [[(1, 1, 64, 2), (1, 1, 64, 2), (1, 1, 64, 2)]]),
    # grouped-query attention: 4 query heads over 2 key/value heads, then over 1 (multi-query);
    # the mask and dropout check above has 6 query heads over 3 as its second set
    OpCheck("ScaledDotProductAttentionFunction (grouped queries)", F.scaled_dot_product_attention,
            [[(1, 4, 3, 2), (1, 2, 3, 2), (1, 2, 3, 3)], [(2, 4, 2, 3), (2, 1, 4, 3), (2, 1, 4, 2)]]),
    OpCheck("EmbeddingFunction", lambda w: F.embedding(_ids(w.shape[0], (2, 5), w), w), [[(4, 3)], [(1, 2)]]),
    OpCheck("LinearFunction", F.linear, [[(2, 3, 4), (5, 4), (5,)], [(4,), (2, 4)], [(1, 1), (1, 1), (1,)]]),
    OpCheck("DropoutFunction", _seeded(lambda x: F.dropout(x, 0.4)), [[(3, 5)], [(1,)]]),
    # the reference log-probabilities are constants: fixed arrays, one per pair
    OpCheck("DPOLossFunction (mean, sum)",
            lambda c, r: F.dpo_loss(c, r, np.linspace(-3.0, 3.0, c.shape[0]), np.cos(np.arange(c.shape[0])), 0.7)
            + F.dpo_loss(c, r, np.zeros(c.shape[0]), np.ones(c.shape[0]), 2.0, reduction="sum"),
            [[(4,), (4,)], [(1,), (1,)]], low=-6.0, high=6.0),
]

CHECKS = PRIMITIVES + FUSED


def run_check(check: OpCheck, device: str = "cpu", max_elements: int = 24) -> Result:
    """Check one op on every set of its shapes (up to max_elements random elements per input)."""
    worst, problem = 0.0, ""
    rng = np.random.default_rng(0)
    rng_state = get_rng_state()
    try:
        for shapes in check.shapes:
            inputs = [Tensor(rng.uniform(check.low, check.high, size=s), requires_grad=True, dtype=np.float64,
                             device=device) for s in shapes]
            worst = max(worst, gradient_error(check.fn, inputs, eps=check.eps, max_elements=max_elements))
    except Exception as e:  # a check that crashes is reported as a failure, not a traceback
        problem = f"{type(e).__name__}: {e}"
    finally:
        set_rng_state(rng_state)
    tried = "; ".join("+".join(str(tuple(s)).replace(" ", "") for s in shapes) for shapes in check.shapes)
    passed = not problem and worst <= TOLERANCE
    return Result(check.name, tried, worst, passed, problem)


def extra_checks(module_names: Sequence[str]) -> list[OpCheck]:
    """The CHECKS lists of the named modules (an op of your own)."""
    found = []
    for name in module_names:
        module = importlib.import_module(name)
        checks = getattr(module, "CHECKS", None)
        if not isinstance(checks, (list, tuple)) or not all(isinstance(c, OpCheck) for c in checks):
            raise SystemExit(f"check: module {name!r} needs a list named CHECKS of tinytensor.check.OpCheck")
        found.extend(checks)
    return found


def report(checks: Sequence[OpCheck], device: str = "cpu", out: Callable[[str], None] = print) -> bool:
    """Run the checks and print the table; True when every op passed."""
    start = time.perf_counter()
    results = [run_check(c, device) for c in checks]
    width = max(len(r.name) for r in results)
    shapes_width = max(len("shapes tried"), *(len(r.shapes) for r in results))
    out(f"finite-difference check of {len(results)} ops on {device}, float64 "
        f"(worst error: max |backward - fd| / max(1, |fd|); pass: <= {TOLERANCE:g})")
    out(f"{'op':{width}s}  {'shapes tried':{shapes_width}s}  {'worst error':>11s}  pass")
    for r in results:
        out(f"{r.name:{width}s}  {r.shapes:{shapes_width}s}  {r.error:11.2e}  {'ok' if r.passed else 'FAIL'}")
        if r.problem:
            out(f"{'':{width}s}  {r.problem}")
    failed = [r.name for r in results if not r.passed]
    out(f"{len(results) - len(failed)} of {len(results)} passed in {time.perf_counter() - start:.1f} s"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return not failed
