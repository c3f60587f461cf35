"""tinytensor.reference, the composed version of every fused op that the other
tests check the fused ops against: its values against plain NumPy written here,
and the two GPT-only fused ops (RoPE, LoRA) against it."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from conftest import as_numpy, seeds

import tinytensor as tt
from gpt.lora import lora_linear
from gpt.rope import apply_rotary, rope_tables
from tinytensor import reference as R



def arr(shape, seed, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def t(a, device="cpu"):
    return tt.tensor(a, requires_grad=True, dtype=np.float64, device=device)


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@given(seed=seeds, axis=st.sampled_from([0, -1]))
def test_softmax_family_against_numpy(seed, axis):
    x = arr((3, 5), seed, -30, 30)
    np.testing.assert_allclose(R.softmax(t(x), axis).numpy(), np_softmax(x, axis), rtol=1e-12)
    np.testing.assert_allclose(R.log_softmax(t(x), axis).numpy(), np.log(np_softmax(x, axis)), rtol=1e-12,
                               atol=1e-12)


def test_cross_entropy_against_numpy():
    x = arr((4, 6), 0)
    targets = np.array([2, -100, 5, 0])
    logp = np.log(np_softmax(x))
    per_row = np.array([-logp[0, 2], 0.0, -logp[2, 5], -logp[3, 0]])
    np.testing.assert_allclose(R.cross_entropy(t(x), targets, reduction="none").numpy(), per_row, rtol=1e-12)
    np.testing.assert_allclose(R.cross_entropy(t(x), targets, reduction="sum").item(), per_row.sum(), rtol=1e-12)
    np.testing.assert_allclose(R.cross_entropy(t(x), targets).item(), per_row.sum() / 3, rtol=1e-12)
    assert R.cross_entropy(t(x), np.full(4, -100)).item() == 0.0


def test_norms_against_numpy():
    x, w, b = arr((2, 3, 8), 1), arr(8, 2), arr(8, 3)
    xhat = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(R.layer_norm(t(x), t(w), t(b)).numpy(), xhat * w + b, rtol=1e-12)
    np.testing.assert_allclose(R.layer_norm(t(x), None, None).numpy(), xhat, rtol=1e-12)
    rms = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(R.rms_norm(t(x), t(w)).numpy(), rms * w, rtol=1e-12)


def test_activations_against_numpy():
    x = arr(50, 4, -6, 6)
    gelu = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(R.gelu(t(x)).numpy(), gelu, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(R.silu(t(x)).numpy(), x / (1 + np.exp(-x)), rtol=1e-12)


def test_linear_embedding_dropout_against_numpy():
    x, w, b = arr((2, 3, 4), 5), arr((6, 4), 6), arr(6, 7)
    np.testing.assert_allclose(R.linear(t(x), t(w), t(b)).numpy(), x @ w.T + b, rtol=1e-12)
    ids = np.array([[0, 5], [5, 1]])
    np.testing.assert_array_equal(R.embedding(ids, t(w)).numpy(), w[ids])
    keep = np.array([[True, False, True, True]])
    np.testing.assert_allclose(R.dropout(t(x[0, :1]), 0.25, keep).numpy(), x[0, :1] * keep / 0.75, rtol=1e-15)


def test_attention_against_numpy():
    q, k, v = arr((2, 3, 4), 8), arr((2, 5, 4), 9), arr((2, 5, 3), 10)
    s = q @ k.swapaxes(-1, -2) / 2.0                        # scale 1 / sqrt(4)
    s[:, np.triu(np.ones((3, 5), dtype=bool), k=3)] = -np.inf  # query i sits at position 2 + i
    expected = np_softmax(s) @ v
    np.testing.assert_allclose(R.scaled_dot_product_attention(t(q), t(k), t(v)).numpy(), expected, rtol=1e-12)
    bias = arr((3, 5), 11)
    plain = np_softmax(q @ k.swapaxes(-1, -2) * 0.3 + bias) @ v
    out = R.scaled_dot_product_attention(t(q), t(k), t(v), causal=False, attn_mask=bias, scale=0.3)
    np.testing.assert_allclose(out.numpy(), plain, rtol=1e-12)


@given(seed=seeds, t_len=st.integers(1, 6), half=st.integers(1, 3))
def test_rotary_matches_its_reference(seed, t_len, half, device):
    cos, sin = rope_tables(2 * half, t_len, dtype=np.float64)
    x = arr((2, 1, t_len, 2 * half), seed)
    a, b = t(x, device), t(x, device)
    ya, yb = apply_rotary(a, cos, sin), R.rotary(b, cos, sin)
    np.testing.assert_allclose(ya.numpy(), yb.numpy(), rtol=1e-12, atol=1e-15)
    g = arr(ya.shape, seed + 1)
    ya.backward(g)
    yb.backward(g)
    assert ya.device == yb.device == device
    np.testing.assert_allclose(as_numpy(a.grad), as_numpy(b.grad), rtol=1e-12, atol=1e-15)


@given(seed=seeds, rank=st.integers(1, 3), with_bias=st.booleans())
def test_lora_linear_matches_its_reference(seed, rank, with_bias, device):
    x, a, b_up, w = arr((2, 3, 4), seed), arr((rank, 4), seed + 1), arr((5, rank), seed + 2), arr((5, 4), seed + 3)
    bias = arr(5, seed + 4) if with_bias else None
    fused = [t(v, device) if v is not None else None for v in (x, a, b_up, w, bias)]
    composed = [t(v, device) if v is not None else None for v in (x, a, b_up, w, bias)]
    ya, yb = lora_linear(*fused, scale=0.5), R.lora_linear(*composed, scale=0.5)
    np.testing.assert_allclose(ya.numpy(), yb.numpy(), rtol=1e-12)
    g = arr(ya.shape, seed + 5)
    ya.backward(g)
    yb.backward(g)
    for fa, fb in zip(fused, composed):
        if fa is not None:
            np.testing.assert_allclose(as_numpy(fa.grad), as_numpy(fb.grad), rtol=1e-11, atol=1e-13)


# ---- the walk: tensor.py's _walk against reference.backward, on random graphs ------------------
from tinytensor import functional as F  # noqa: E402

SHAPE = (2, 3)
STEPS = {  # name -> (number of operands, the op), every result of shape SHAPE
    "add": (2, lambda a, b: a + b), "sub": (2, lambda a, b: a - b), "mul": (2, lambda a, b: a * b),
    "div": (2, lambda a, b: a / (1.5 + b * b)), "tanh": (1, lambda a: a.tanh()),
    "row_sum": (1, lambda a: a.sum(axis=1, keepdims=True) * a), "matmul": (2, lambda a, b: a @ b.T @ a),
    "unbind": (1, lambda a: tt.stack([r * (i + 1.0) for i, r in enumerate(a.unbind(0))])),   # multi-output
    "split_one": (1, lambda a: tt.concatenate([a.split([1, 2], axis=1)[1], a[:, :1]], axis=1)),
    "softmax": (1, lambda a: F.softmax(a)), "layer_norm": (2, lambda a, b: F.layer_norm(a, b[0], None)),
    "linear": (2, lambda a, b: F.linear(a, b.T @ b, None)), "gelu": (1, lambda a: F.gelu(a)),
    "leaf_twice": (1, lambda a: a * a * a),
}


@given(seed=seeds, steps=st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=8),
       picks=st.lists(st.integers(0, 100), min_size=16, max_size=16))
def test_the_engines_walk_gives_the_reference_walks_gradients(seed, steps, picks):
    rng = np.random.default_rng(seed)
    leaves = [t(rng.uniform(-1, 1, SHAPE)) for _ in range(3)]
    pool, pick = list(leaves), iter(picks)
    for name in steps:                  # each step reads tensors made earlier: fan-out, shared leaves
        n, op = STEPS[name]
        pool.append(op(*[pool[next(pick) % len(pool)] for _ in range(n)]))
    loss = sum(((p * rng.standard_normal(SHAPE)).sum() for p in pool[3:]), pool[-1].sum())
    R.backward(loss)
    expected = [leaf.grad for leaf in leaves]   # None for a leaf the steps never picked
    for leaf in leaves:
        leaf.grad = None
    loss.backward()
    for leaf, want in zip(leaves, expected):
        assert (leaf.grad is None) == (want is None)
        if want is not None:
            np.testing.assert_allclose(leaf.grad, want, rtol=1e-10, atol=1e-12)


def test_the_reference_walk_accumulates_into_grad_and_keeps_the_graph():
    x = t(np.array([1.0, 2.0, 3.0]))
    a, b, c = x.unbind(0)
    loss = (a * b + c * c * x).sum()       # = 3ab + c^2 sum(x): dx = [3b, 3a, 2c sum(x)] + c^2
    R.backward(loss)
    np.testing.assert_array_equal(x.grad, [6.0 + 9.0, 3.0 + 9.0, 36.0 + 9.0])
    R.backward(loss)                       # the graph is kept: a second walk adds as much again
    np.testing.assert_array_equal(x.grad, 2 * np.array([15.0, 12.0, 45.0]))


def test_every_fused_op_names_its_page_and_its_reference_twin():
    import inspect
    import re
    from pathlib import Path

    from gpt import lora, rope
    from tinytensor import functional

    docs = Path(__file__).resolve().parents[1] / "docs"
    fused = [obj for module in (functional, rope, lora) for obj in vars(module).values()
             if inspect.isclass(obj) and issubclass(obj, tt.Function) and obj.__module__ == module.__name__]
    assert len(fused) >= 13
    for cls in fused:
        first = (cls.__doc__ or "").splitlines()[0]
        m = re.fullmatch(r"Derived in docs/([\w-]+\.md); (?:twin: reference\.(\w+)|no reference twin \(.+\))\.", first)
        assert m, f"{cls.__name__}'s docstring should open with its page and twin, got {first!r}"
        assert (docs / m.group(1)).is_file() and cls.__name__ in (docs / m.group(1)).read_text(), cls.__name__
        assert m.group(2) is None or callable(getattr(R, m.group(2), None)), cls.__name__
