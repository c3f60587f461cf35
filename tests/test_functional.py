"""Fused ops: finite-difference property tests, agreement with the same math
composed from primitives (tinytensor.reference; forward and backward), and the edge cases each op promises."""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import as_numpy, rand, seeds

import tinytensor as tt
from tinytensor import gradbuffer
from tinytensor import functional as F
from tinytensor import reference as R



def keep_mask(shape, p, seed):
    """The dropout mask F draws after tt.manual_seed(seed): 16 random bits per element vs round(p * 2^16)."""
    tt.manual_seed(seed)
    return tt.random.generator().integers(0, 1 << 16, size=shape, dtype=np.uint16) >= round(p * 65536)


def leaves(*tensors):
    """Fresh leaves with the same data (so two graphs do not share .grad)."""
    return [None if t is None else tt.Tensor(t.data.copy(), requires_grad=True) for t in tensors]


def assert_same(fused, composed, inputs, seed=0, rtol=1e-7, atol=1e-9):
    """fused(*inputs) equals composed(*inputs), and so do the gradients of sum(y * w)."""
    a, b = leaves(*inputs), leaves(*inputs)
    ya, yb = fused(*a), composed(*b)
    assert ya.device == yb.device == inputs[0].device
    np.testing.assert_allclose(ya.numpy(), yb.numpy(), rtol=rtol, atol=atol)
    w = np.random.default_rng(seed).standard_normal(ya.shape)
    ya.backward(w)
    yb.backward(w)
    for ta, tb in zip(a, b):
        if ta is not None:
            np.testing.assert_allclose(as_numpy(ta.grad), as_numpy(tb.grad), rtol=rtol, atol=atol)


# ---- softmax, log_softmax ------------------------------------------------------------
@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), data=st.data(), seed=seeds)
def test_softmax_gradcheck(fn, shape, data, seed, device):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    assert tt.gradcheck(lambda x: fn(x, axis=axis), [rand(shape, seed, -3, 3, device=device)])


@pytest.mark.parametrize("fn, ref", [(F.softmax, R.softmax), (F.log_softmax, R.log_softmax)])
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), data=st.data(), seed=seeds)
def test_softmax_matches_primitives(fn, ref, shape, data, seed, device):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    assert_same(lambda x: fn(x, axis), lambda x: ref(x, axis), [rand(shape, seed, -5, 5, device=device)], seed)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_is_finite_on_extreme_logits(dtype, device):
    x = tt.tensor([[1000.0, 0.0, -1000.0], [-np.inf, -np.inf, 3.0]], requires_grad=True, dtype=dtype, device=device)
    for fn in (F.softmax, F.log_softmax):
        x.grad = None
        y = fn(x)
        assert y.dtype == dtype
        expected_p = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        if fn is F.softmax:
            np.testing.assert_array_equal(y.numpy(), expected_p)
        else:
            np.testing.assert_array_equal(y.numpy()[0], [0.0, -1000.0, -2000.0])
            np.testing.assert_array_equal(y.numpy()[1], [-np.inf, -np.inf, 0.0])
        y.backward(np.ones(y.shape))
        assert np.isfinite(as_numpy(x.grad)).all()


# ---- cross-entropy ----------------------------------------------------------------
@st.composite
def ce_case(draw):
    lead = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=2)))
    v = draw(st.integers(1, 8))
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, v, size=lead)
    targets[rng.random(lead) < draw(st.sampled_from([0.0, 0.3, 1.0]))] = -100  # ignore_index hits
    return lead + (v,), targets, seed, draw(st.sampled_from(["mean", "sum", "none"]))


@given(case=ce_case())
def test_cross_entropy_gradcheck(case, device):
    shape, targets, seed, reduction = case
    fn = lambda lg: F.cross_entropy(lg, targets, reduction=reduction)  # noqa: E731
    assert tt.gradcheck(fn, [rand(shape, seed, -4, 4, device=device)])


@given(case=ce_case())
def test_cross_entropy_matches_primitives(case, device):
    shape, targets, seed, reduction = case
    assert_same(lambda lg: F.cross_entropy(lg, tt.tensor(targets, device=device), reduction=reduction),
                lambda lg: R.cross_entropy(lg, targets, reduction=reduction), [rand(shape, seed, -4, 4, device=device)],
                seed)


def test_cross_entropy_custom_ignore_index_and_all_ignored(device):
    logits = rand((2, 3, 5), 0, device=device)
    targets = np.array([[1, 7, 4], [7, 0, 2]])
    assert_same(lambda lg: F.cross_entropy(lg, targets, ignore_index=7),
                lambda lg: R.cross_entropy(lg, targets, ignore_index=7), [logits])
    # every target ignored: "mean" is defined as 0 with a zero gradient
    loss = F.cross_entropy(logits, np.full((2, 3), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert not as_numpy(logits.grad).any()


def test_cross_entropy_extreme_logits_stay_finite(device):
    logits = tt.tensor([[1000.0, 0.0, -1000.0], [0.0, 1000.0, -1000.0]], requires_grad=True, device=device)
    loss = F.cross_entropy(logits, [0, 0])
    np.testing.assert_allclose(loss.item(), 500.0)
    loss.backward()
    np.testing.assert_allclose(as_numpy(logits.grad), [[0, 0, 0], [-0.5, 0.5, 0]], atol=1e-6)  # (softmax - onehot) / 2


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("upstream", [1.0, 2.5])
def test_cross_entropy_backward_scales_by_upstream_and_runs_again_on_a_retained_graph(reduction, upstream, device):
    # the forward saves w (softmax - onehot); backward scales it by g, or, for g = 1,
    # returns a view of it that nothing may write into: a second backward must give the same
    rng = np.random.default_rng(0)
    x = rng.uniform(-4, 4, (6, 5))
    targets = np.array([0, 4, -100, 2, 2, 1])
    kept = targets != -100
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(5)[np.where(kept, targets, 0)] * kept[:, None]
    per_row = rng.standard_normal(6) if reduction == "none" else np.ones(6)
    g = upstream * per_row * kept / (kept.sum() if reduction == "mean" else 1)
    expected = g[:, None] * (p - onehot)
    logits = tt.tensor(x, requires_grad=True, dtype=np.float64, device=device)
    loss = F.cross_entropy(logits * 1.0, targets, reduction=reduction)  # not a leaf: the leaf's grad is an add
    scaled = loss * upstream if upstream != 1.0 else loss
    grad = tt.tensor(per_row, device=device).data if reduction == "none" else None
    scaled.backward(grad, retain_graph=True)
    np.testing.assert_allclose(as_numpy(logits.grad), expected, rtol=1e-12, atol=1e-15)
    scaled.backward(grad)
    np.testing.assert_allclose(as_numpy(logits.grad), 2 * expected, rtol=1e-12, atol=1e-15)


def test_cross_entropy_gradient_is_not_overwritten_by_other_uses_of_the_logits(device):
    # logits with two consumers: the engine sums their gradients, in place where it may;
    # the saved gradient cross-entropy hands back must stay intact for a retained graph
    rng = np.random.default_rng(1)
    x, c = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    targets = np.array([2, 0, 1, 1])
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    expected = (p - np.eye(3)[targets]) / 4 + c
    logits = tt.tensor(x, requires_grad=True, dtype=np.float64, device=device)
    z = logits * 1.0
    loss = F.cross_entropy(z, targets) + (z * tt.tensor(c, device=device)).sum()
    for n in (1, 2):
        loss.backward(retain_graph=True)
        np.testing.assert_allclose(as_numpy(logits.grad), n * expected, rtol=1e-12)


def test_cross_entropy_errors(device):
    logits = rand((4, 5), 0, device=device)
    with pytest.raises(IndexError, match=r"target 5 .* 5 classes"):
        F.cross_entropy(logits, [0, 1, 5, 2])
    with pytest.raises(IndexError, match=r"target -3"):
        F.cross_entropy(logits, [0, 1, -3, 2])
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(3,\)"):
        F.cross_entropy(logits, [0, 1, 2])
    with pytest.raises(TypeError, match="integers"):
        F.cross_entropy(logits, np.zeros(4))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, [0, 1, 2, 3], reduction="avg")


# ---- layer_norm, rms_norm -------------------------------------------------------------
norm_shapes = st.tuples(st.lists(st.integers(1, 4), max_size=2), st.integers(1, 8))


@given(shape=norm_shapes, seed=seeds, affine=st.sampled_from([(True, True), (True, False), (False, True),
                                                               (False, False)]))
def test_layer_norm_gradcheck_and_matches_primitives(shape, seed, affine, device):
    lead, c = shape
    x = rand(tuple(lead) + (c,), seed, device=device)
    w = rand((c,), seed + 1, device=device) if affine[0] else None
    b = rand((c,), seed + 2, device=device) if affine[1] else None
    inputs = [t for t in (x, w, b) if t is not None]

    def pack(fn):
        def run(*ts):
            it = iter(ts)
            return fn(next(it), next(it) if w is not None else None, next(it) if b is not None else None)
        return run

    assert tt.gradcheck(pack(lambda x, w, b: F.layer_norm(x, w, b, eps=1e-3)), inputs)
    assert_same(pack(F.layer_norm), pack(R.layer_norm), inputs, seed, rtol=1e-6, atol=1e-8)


@given(shape=norm_shapes, seed=seeds, weighted=st.booleans())
def test_rms_norm_gradcheck_and_matches_primitives(shape, seed, weighted, device):
    lead, c = shape
    x = rand(tuple(lead) + (c,), seed, device=device)
    inputs = [x, rand((c,), seed + 1, device=device)] if weighted else [x]
    fused = (lambda x, w: F.rms_norm(x, w)) if weighted else (lambda x: F.rms_norm(x, None))
    composed = (lambda x, w: R.rms_norm(x, w)) if weighted else (lambda x: R.rms_norm(x, None))
    assert tt.gradcheck(fused, inputs)
    assert_same(fused, composed, inputs, seed, rtol=1e-6, atol=1e-8)


def test_norm_shape_errors():
    with pytest.raises(ValueError, match=r"\(4,\).*\(2, 3\)"):
        F.layer_norm(rand((2, 3), 0), rand((4,), 0), None)
    with pytest.raises(ValueError, match=r"\(3, 1\).*\(2, 3\)"):
        F.layer_norm(rand((2, 3), 0), None, rand((3, 1), 0))
    with pytest.raises(ValueError, match=r"\(5,\).*\(2, 3\)"):
        F.rms_norm(rand((2, 3), 0), rand((5,), 0))


# ---- activations ------------------------------------------------------------------
activation_shapes = st.lists(st.integers(1, 5), max_size=3)


@pytest.mark.parametrize("fn", [lambda x: F.gelu(x), lambda x: F.gelu(x, approximate="none"), F.silu,
                                F.tanh], ids=["gelu_tanh", "gelu_erf", "silu", "tanh"])
@given(shape=activation_shapes, seed=seeds)
def test_activation_gradcheck(fn, shape, seed, device):
    assert tt.gradcheck(fn, [rand(shape, seed, -5, 5, device=device)])


@given(shape=activation_shapes, seed=seeds)
def test_activations_match_primitives(shape, seed, device):
    x = rand(shape, seed, -6, 6, device=device)
    assert_same(F.gelu, R.gelu, [x], seed)
    assert_same(F.silu, R.silu, [x], seed)


def test_gelu_exact_against_erf_and_extremes(device):
    x = np.linspace(-8, 8, 101)
    y = F.gelu(tt.tensor(x, dtype=np.float64, device=device), approximate="none").numpy()
    np.testing.assert_allclose(y, [v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x], rtol=1e-12, atol=1e-15)
    big = tt.tensor([-1000.0, -50.0, 0.0, 50.0, 1000.0], requires_grad=True, device=device)
    for fn in (F.gelu, F.silu, lambda t: F.gelu(t, approximate="none")):
        big.grad = None
        y = fn(big)
        y.sum().backward()
        np.testing.assert_allclose(y.numpy(), [0, 0, 0, 50, 1000], atol=1e-6)
        np.testing.assert_allclose(as_numpy(big.grad), [0, 0, 0.5, 1, 1], atol=1e-6)
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(big, approximate="fast")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_tanh_far_tails_reach_their_limits_without_warnings(dtype):
    # computed as x sigmoid(v): e^(-v) overflows to inf for very negative x, which must give
    # s = 0 exactly (y = 0, dy/dx = 0), not nan and not an overflow warning
    x = tt.tensor([-1e4, -300.0, -40.0, 40.0, 300.0, 1e4], requires_grad=True, dtype=dtype)  # v < -4000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.gelu(x)
        y.sum().backward()
    assert y.dtype == dtype
    np.testing.assert_array_equal(y.numpy(), [0, 0, 0, 40, 300, 1e4])
    np.testing.assert_array_equal(x.grad, [0, 0, 0, 1, 1, 1])


def test_gelu_tanh_is_the_tanh_formula():
    # the code's sigmoid form against GPT-2's tanh form, written out here, on a fine grid
    x = np.linspace(-7, 7, 2001)
    c, a = math.sqrt(2 / math.pi), 0.044715
    expected = 0.5 * x * (1 + np.tanh(c * (x + a * x**3)))
    np.testing.assert_allclose(F.gelu(tt.tensor(x, dtype=np.float64)).numpy(), expected, rtol=1e-13, atol=1e-15)
    x32 = tt.tensor(x, dtype=np.float32)
    np.testing.assert_allclose(F.gelu(x32).numpy(), expected, rtol=2e-6, atol=1e-7)


def test_relu_wrapper(device):
    x = tt.tensor([-1.0, 2.0], requires_grad=True, device=device)
    F.relu(x).sum().backward()
    np.testing.assert_array_equal(as_numpy(x.grad), [0, 1])


# ---- attention ------------------------------------------------------------------
@st.composite
def attention_case(draw, max_t=17):
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    tk = draw(st.integers(1, max_t))
    causal = draw(st.booleans())
    # causal: Tq <= Tk (a query block at the end of a key cache); else any Tq
    tq = draw(st.integers(1, tk)) if causal else draw(st.integers(1, max_t))
    d, dv = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from([None, "bool", "float"]))
    mshape = draw(st.sampled_from([(b, h, tq, tk), (tq, tk), (b, 1, 1, tk), (1, tk)]))
    mask = None
    if kind == "bool":
        mask = rng.random(mshape) < 0.7
        mask[..., 0] = True  # every query keeps key 0, so no row is fully masked
    elif kind == "float":
        mask = rng.uniform(-2, 2, size=mshape)
    dropout_p = draw(st.sampled_from([0.0, 0.0, 0.3]))
    scale = draw(st.sampled_from([None, 0.7]))
    return (b, h, tq, tk, d, dv), causal, mask, dropout_p, scale, seed


def qkv(shape, seed, dtype=np.float64, device="cpu"):
    b, h, tq, tk, d, dv = shape
    return (rand((b, h, tq, d), seed, dtype=dtype, device=device),
            rand((b, h, tk, d), seed + 1, dtype=dtype, device=device),
            rand((b, h, tk, dv), seed + 2, dtype=dtype, device=device))


@contextmanager
def attention_blocks(blocks: int, min_rows: int, scores: int | None = None):
    """Causal attention in up to `blocks` blocks of >= `min_rows` query rows, each in slices
    of the batch of about `scores` scores (small ones, so that the short sequences of these
    tests go through the blocked and sliced paths too)."""
    saved = F._ATTENTION_BLOCKS, F._ATTENTION_MIN_ROWS, F._ATTENTION_SCORES
    F._ATTENTION_BLOCKS, F._ATTENTION_MIN_ROWS = blocks, min_rows
    F._ATTENTION_SCORES = saved[2] if scores is None else scores
    try:
        yield
    finally:
        F._ATTENTION_BLOCKS, F._ATTENTION_MIN_ROWS, F._ATTENTION_SCORES = saved


# "3-blocks-by-item": each batch item's scores a slice of their own
BLOCKINGS = {"one-block": (1, 1), "blocks-of-2": (64, 2), "3-blocks": (3, 1), "3-blocks-by-item": (3, 1, 1)}


@pytest.mark.parametrize("blocking", BLOCKINGS)
@given(case=attention_case())
def test_attention_gradcheck(blocking, case, device):
    shape, causal, mask, dropout_p, scale, seed = case

    def fn(q, k, v):
        tt.manual_seed(seed)  # the same dropout mask on every call
        return F.scaled_dot_product_attention(q, k, v, causal=causal, attn_mask=mask, dropout_p=dropout_p,
                                              scale=scale)

    with attention_blocks(*BLOCKINGS[blocking]):
        assert tt.gradcheck(fn, qkv(shape, seed, device=device), max_elements=40)


@pytest.mark.parametrize("blocking", BLOCKINGS)
@given(case=attention_case())
def test_attention_matches_primitives(blocking, case, device):
    shape, causal, mask, dropout_p, scale, seed = case
    b, h, tq, tk, d, dv = shape
    keep = keep_mask((b, h, tq, tk), dropout_p, seed) if dropout_p else None

    def fused(q, k, v):
        tt.manual_seed(seed)
        return F.scaled_dot_product_attention(q, k, v, causal, mask, dropout_p, scale)

    with attention_blocks(*BLOCKINGS[blocking]):
        assert_same(fused, lambda q, k, v: R.scaled_dot_product_attention(q, k, v, causal, mask, dropout_p, scale, keep),
                    qkv(shape, seed, device=device), seed, rtol=1e-6, atol=1e-9)


@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 9), st.integers(0, 8),
                       st.integers(1, 3)), seed=seeds, data=st.data())
def test_attention_is_causal(shape, seed, data, device):
    b, h, tq, extra, d = shape
    tk = tq + extra
    q, k, v = qkv((b, h, tq, tk, d, d), seed, device=device)
    out = F.scaled_dot_product_attention(q, k, v).numpy()
    j = data.draw(st.integers(0, tk - 1))  # change keys and values from absolute position j on
    k2, v2 = k.numpy().copy(), v.numpy().copy()
    k2[..., j:, :] += 1.0
    v2[..., j:, :] -= 3.0
    out2 = F.scaled_dot_product_attention(q, tt.tensor(k2, device=device), tt.tensor(v2, device=device)).numpy()
    earlier = max(0, j - (tk - tq))  # query i sits at position tk - tq + i and sees keys <= that
    np.testing.assert_array_equal(out[..., :earlier, :], out2[..., :earlier, :])
    assert not np.allclose(out[..., earlier:, :], out2[..., earlier:, :])


def test_attention_query_block_is_bottom_right_aligned(device):
    q, k, v = qkv((2, 3, 10, 10, 4, 4), 0, device=device)
    full = F.scaled_dot_product_attention(q, k, v).numpy()
    last = F.scaled_dot_product_attention(q[:, :, 6:], k, v).numpy()
    np.testing.assert_allclose(last, full[:, :, 6:], rtol=1e-12)


@pytest.mark.parametrize("blocking", BLOCKINGS)
def test_attention_fully_masked_rows_are_zero(blocking, device):
    q, k, v = qkv((1, 2, 5, 3, 4, 4), 0, device=device)  # causal with Tq > Tk: the first two queries see no key
    with attention_blocks(*BLOCKINGS[blocking]):
        out = F.scaled_dot_product_attention(q, k, v)
        out.backward(np.ones(out.shape))
    q_grad = as_numpy(q.grad)
    assert np.isfinite(out.numpy()).all() and np.isfinite(q_grad).all()
    assert not out.numpy()[:, :, :2].any() and not q_grad[:, :, :2].any()
    # the others match plain attention of the last three queries over the three keys
    np.testing.assert_allclose(out.numpy()[:, :, 2:], R.scaled_dot_product_attention(q[:, :, 2:], k, v).numpy(), rtol=1e-12)


@pytest.mark.parametrize("blocking", BLOCKINGS)
def test_attention_without_grad_gives_the_same_values(blocking, device):
    # under no_grad the node keeps no P (each slice's scores reuse memory): same numbers
    q, k, v = qkv((3, 2, 7, 9, 4, 3), 0, device=device)
    mask = np.random.default_rng(0).random((3, 2, 7, 9)) < 0.8
    with attention_blocks(*BLOCKINGS[blocking]):
        tt.manual_seed(0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.3)
        tt.manual_seed(0)
        with tt.no_grad():
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.3)
    assert len(y._ctx.blocks) > 0 and z._ctx is None
    np.testing.assert_array_equal(as_numpy(y.data), as_numpy(z.data))


def test_attention_shape_errors(device):
    q, k, v = qkv((1, 2, 4, 5, 3, 3), 0, device=device)
    with pytest.raises(ValueError, match=r"\(1, 2, 4, 3\).*\(1, 2, 6, 3\)"):
        F.scaled_dot_product_attention(q, tt.tensor(np.zeros((1, 2, 6, 3)), device=device), v)
    with pytest.raises(ValueError, match=r"attn_mask of shape \(3, 5\).*\(1, 2, 4, 5\)"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((3, 5), dtype=bool))


# ---- embedding -------------------------------------------------------------------
@given(v=st.integers(1, 10), c=st.integers(1, 5), ids_shape=st.lists(st.integers(1, 6), max_size=2), seed=seeds)
def test_embedding_gradcheck_and_matches_primitives(v, c, ids_shape, seed, device):
    ids = np.random.default_rng(seed).integers(0, v, size=ids_shape)
    w = rand((v, c), seed, device=device)
    assert tt.gradcheck(lambda w: F.embedding(ids, w), [w])
    assert_same(lambda w: F.embedding(tt.tensor(ids, device=device), w), lambda w: R.embedding(ids, w), [w], seed)


def test_embedding_repeated_ids_accumulate(device):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=(8, 64))  # many repeats
    w = tt.tensor(rng.standard_normal((50, 16)), requires_grad=True, dtype=np.float32, device=device)
    g = rng.standard_normal((8, 64, 16)).astype(np.float32)
    F.embedding(ids, w).backward(g)
    expected = np.zeros((50, 16), dtype=np.float32)
    np.add.at(expected, ids.reshape(-1), g.reshape(-1, 16))
    assert w.grad.dtype == np.float32
    np.testing.assert_allclose(as_numpy(w.grad), expected, rtol=1e-5, atol=1e-5)


def test_embedding_errors(device):
    w = rand((10, 3), 0, device=device)
    with pytest.raises(IndexError, match=r"id 10 .* vocabulary of 10"):
        F.embedding([1, 10], w)
    with pytest.raises(IndexError, match=r"id -1 .* vocabulary of 10"):
        F.embedding(np.array([[-1, 2]]), w)
    with pytest.raises(TypeError, match="integers"):
        F.embedding(np.array([1.0]), w)


# ---- linear -----------------------------------------------------------------------
@given(lead=st.lists(st.integers(1, 4), max_size=2), n_in=st.integers(1, 5), n_out=st.integers(1, 5),
       bias=st.booleans(), seed=seeds)
def test_linear_gradcheck_and_matches_primitives(lead, n_in, n_out, bias, seed, device):
    x, w = rand(tuple(lead) + (n_in,), seed, device=device), rand((n_out, n_in), seed + 1, device=device)
    inputs = [x, w, rand((n_out,), seed + 2, device=device)] if bias else [x, w]
    assert tt.gradcheck(F.linear, inputs)
    assert_same(F.linear, R.linear, inputs, seed)


def test_linear_shape_errors():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        F.linear(rand((2, 3), 0), rand((4, 5), 0))
    with pytest.raises(ValueError, match=r"\(3,\).*\(4, 3\)"):
        F.linear(rand((2, 3), 0), rand((4, 3), 0), rand((3,), 0))


# ---- gradients written into the optimizer's slot ------------------------------------
def tied_model_grads(with_optimizer, zero_to_none=True, backwards=1, device="cpu"):
    """d/dW of an embedding and a linear that share W (GPT-2's tied head), with the
    optimizer's flat buffer (the backwards write into its slot) or without (new arrays)."""
    rng = np.random.default_rng(3)
    w = tt.tensor(rng.standard_normal((7, 4)), requires_grad=True, dtype=np.float32, device=device)
    b = tt.tensor(rng.standard_normal(7), requires_grad=True, dtype=np.float32, device=device)
    ids = rng.integers(0, 7, size=(3, 5))
    h = tt.tensor(rng.standard_normal((3, 5, 4)), dtype=np.float32, device=device)
    g_emb, g_out = rng.standard_normal((3, 5, 4)).astype(np.float32), rng.standard_normal((3, 5, 7)).astype(np.float32)
    opt = tt.optim.SGD([w, b], lr=0.1) if with_optimizer else None
    if opt is not None:
        opt.zero_grad(set_to_none=zero_to_none)
    for _ in range(backwards):
        loss = ((F.embedding(ids, w) * tt.tensor(g_emb, device=device)).sum()
                + (F.linear(h, w, b) * tt.tensor(g_out, device=device)).sum())
        loss.backward()
    return w, b, opt


@pytest.mark.parametrize("zero_to_none", [True, False])
@pytest.mark.parametrize("backwards", [1, 2])
def test_linear_and_embedding_gradients_in_the_slot_are_bit_identical(zero_to_none, backwards, device):
    w0, b0, _ = tied_model_grads(False, backwards=backwards, device=device)
    w1, b1, opt = tied_model_grads(True, zero_to_none, backwards, device=device)
    np.testing.assert_array_equal(as_numpy(w1.grad), as_numpy(w0.grad))
    np.testing.assert_array_equal(as_numpy(b1.grad), as_numpy(b0.grad))
    assert w1.grad is gradbuffer.slot(w1)
    if device == "cpu":
        assert np.shares_memory(w1.grad, opt.flat_grad)
    # and the sum is right: the linear's G^T X plus the embedding's scattered rows
    rng = np.random.default_rng(3)
    rng.standard_normal((7, 4)), rng.standard_normal(7)
    ids, h = rng.integers(0, 7, size=(3, 5)), rng.standard_normal((3, 5, 4)).astype(np.float32)
    g_emb, g_out = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5, 7))
    expected = g_out.reshape(-1, 7).T @ h.reshape(-1, 4)
    np.add.at(expected, ids.reshape(-1), g_emb.reshape(-1, 4))
    np.testing.assert_allclose(as_numpy(w1.grad), backwards * expected, rtol=1e-5, atol=1e-5)


def test_linear_of_a_weight_with_itself_counts_both_uses(device):
    # y = W W^T: W is the input and the weight of one node, so neither use may take its slot alone
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 3))
    w = tt.tensor(w0, requires_grad=True, dtype=np.float64, device=device)
    tt.optim.SGD([w], lr=0.1)
    g = rng.standard_normal((3, 3))
    F.linear(w, w).backward(tt.tensor(g, device=device).data)
    np.testing.assert_allclose(as_numpy(w.grad), g @ w0 + g.T @ w0, rtol=1e-12)


# ---- dropout ----------------------------------------------------------------------
@given(shape=activation_shapes, seed=seeds, p=st.sampled_from([0.1, 0.5, 0.9]))
def test_dropout_gradcheck_and_matches_primitives(shape, seed, p, device):
    def fused(x):
        tt.manual_seed(seed)
        return F.dropout(x, p)

    keep = keep_mask(tuple(shape), p, seed)
    assert tt.gradcheck(fused, [rand(shape, seed, device=device)])
    assert_same(fused, lambda x: R.dropout(x, p, keep), [rand(shape, seed, device=device)], seed)


def test_dropout_identity_and_statistics(device):
    x = rand((200, 500), 0, 0.5, 1.5, dtype=np.float32, device=device)
    assert F.dropout(x, 0.0) is x and F.dropout(x, 0.5, training=False) is x
    tt.manual_seed(1)
    y = F.dropout(x, 0.25)
    assert y.dtype == np.float32
    assert abs(y.numpy().mean() / x.numpy().mean() - 1) < 0.01  # the expectation is preserved
    assert abs((y.numpy() == 0).mean() - 0.25) < 0.01
    g = np.random.default_rng(0).uniform(1, 2, size=x.shape).astype(np.float32)
    y.backward(g)
    dropped = y.numpy() == 0
    x_grad = as_numpy(x.grad)
    assert not x_grad[dropped].any()  # the saved mask, not a new draw
    np.testing.assert_allclose(x_grad[~dropped], g[~dropped] / 0.75, rtol=1e-6)
    tt.manual_seed(1)
    np.testing.assert_array_equal(F.dropout(x, 0.25).numpy(), y.numpy())  # seeded
    assert not F.dropout(x, 1.0).numpy().any()
    with pytest.raises(ValueError, match="p must be"):
        F.dropout(x, 1.5)


# ---- every op: dtype, no_grad, devices ---------------------------------------------
def all_ops(device, dtype):
    rng = np.random.default_rng(0)

    def t(*shape):
        return tt.tensor(rng.standard_normal(shape), requires_grad=True, dtype=dtype, device=device)

    x, w, b = t(2, 3, 8), t(8), t(8)
    q, k, v = t(2, 2, 3, 4), t(2, 2, 5, 4), t(2, 2, 5, 4)
    wl, bl = t(5, 8), t(5)
    return {
        "softmax": lambda: F.softmax(x, axis=1),
        "log_softmax": lambda: F.log_softmax(x),
        "cross_entropy": lambda: F.cross_entropy(x, np.array([[1, 2, -100], [7, 0, 3]])),
        "layer_norm": lambda: F.layer_norm(x, w, b),
        "rms_norm": lambda: F.rms_norm(x, w),
        "gelu": lambda: F.gelu(x),
        "gelu_erf": lambda: F.gelu(x, approximate="none"),
        "silu": lambda: F.silu(x),
        "attention": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((3, 5), bool), dropout_p=0.1),
        "embedding": lambda: F.embedding(np.array([[1, 1], [2, 0]]), x[0]),
        "linear": lambda: F.linear(x, wl, bl),
        "dropout": lambda: F.dropout(x, 0.3),
    }, [x, w, b, q, k, v, wl, bl]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, device):
    ops, inputs = all_ops(device, dtype)
    for name, op in ops.items():
        y = op()
        assert y.dtype == dtype and y.device == device, name
        y.backward(np.ones(y.shape))
    for t in inputs:
        assert t.grad is None or t.grad.dtype == dtype


def test_no_grad_gives_the_same_values(device):
    ops, _ = all_ops(device, np.float64)
    for name, op in ops.items():
        tt.manual_seed(0)
        y = op()
        tt.manual_seed(0)
        with tt.no_grad():
            z = op()
        assert not z.requires_grad and z._ctx is None
        np.testing.assert_array_equal(y.numpy(), z.numpy(), err_msg=name)


def test_ops_on_each_device(device):
    cpu_ops, cpu_inputs = all_ops("cpu", np.float64)
    dev_ops, dev_inputs = all_ops(device, np.float64)
    for name in cpu_ops:
        tt.manual_seed(0)
        a = cpu_ops[name]()
        tt.manual_seed(0)
        b = dev_ops[name]()
        assert b.device == device
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
        a.backward(np.ones(a.shape))
        b.backward(tt.tensor(np.ones(b.shape), device=device))
    for ta, tb in zip(cpu_inputs, dev_inputs):
        np.testing.assert_allclose(as_numpy(tb.grad) if tb.grad is not None else 0,
                                   ta.grad if ta.grad is not None else 0, rtol=1e-9, atol=1e-12)


def test_row_blocks_of_no_rows_on_a_gpu_module():
    # on a GPU (any array module but NumPy) all rows go in one block; no rows, no blocks
    gpu_like = object()
    assert F._row_blocks(0, 5, gpu_like) == []
    assert F._row_blocks(3, 5, gpu_like) == [slice(0, 3)]
