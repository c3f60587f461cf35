"""Finite-difference property tests for every primitive op, and engine properties."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import as_numpy, rand, seeds, shapes

import tinytensor as tt



def away_from(arr: np.ndarray, points, margin=0.05, seed=0):
    """Nudge values off non-differentiable points (finite differences straddle a kink)."""
    arr = arr.copy()
    for p in points:
        close = np.abs(arr - p) < margin
        arr[close] = p + margin * 2 * np.sign(arr[close] - p + 1e-12)
    return arr


# ---- binary ops with broadcasting ----------------------------------------------
binary = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@pytest.mark.parametrize("name", sorted(binary))
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), seed=seeds)
def test_binary_ops_gradcheck(name, shapes, seed, device):
    a_shape, b_shape = shapes.input_shapes
    a = rand(a_shape, seed, device=device)
    b = rand(b_shape, seed + 1, device=device)
    if name == "div":
        b = tt.tensor(away_from(as_numpy(b), [0.0], margin=0.3), requires_grad=True, device=device)
    assert tt.gradcheck(binary[name], [a, b])


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), seed=seeds)
def test_pow_tensor_exponent_gradcheck(shapes, seed, device):
    a_shape, b_shape = shapes.input_shapes
    a = rand(a_shape, seed, low=0.5, high=2.0, device=device)
    b = rand(b_shape, seed + 1, low=-1.5, high=1.5, device=device)
    assert tt.gradcheck(lambda a, b: a ** b, [a, b])


@given(shape=shapes, seed=seeds, p=st.sampled_from([2, 3, 0.5, -1.0, 1.5]))
def test_pow_scalar_gradcheck(shape, seed, p, device):
    x = rand(shape, seed, low=0.3, high=2.0, device=device)
    assert tt.gradcheck(lambda x: x ** p, [x])


def test_pow_zero_has_zero_gradient_even_at_zero(device):
    x = tt.tensor(np.array([0.0, 2.0]), requires_grad=True, device=device)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(as_numpy(x.grad), [0.0, 0.0])


@given(shape=shapes, seed=seeds)
def test_neg_gradcheck(shape, seed, device):
    assert tt.gradcheck(lambda x: -x, [rand(shape, seed, device=device)])


@given(shape=shapes, seed=seeds, scalar=st.floats(-3, 3).filter(lambda v: abs(v) > 0.2))
def test_scalars_and_arrays_on_either_side(shape, seed, scalar, device):
    x = rand(shape, seed, low=0.5, high=2.0, device=device)
    arr = np.random.default_rng(seed).uniform(0.5, 2.0, size=shape)   # a host array: lifted to x's device
    fns = [
        lambda x: scalar + x, lambda x: x - scalar, lambda x: scalar - x, lambda x: scalar * x,
        lambda x: scalar / x, lambda x: x / scalar, lambda x: arr * x, lambda x: arr - x, lambda x: x + arr,
        lambda x: arr / x, lambda x: 2.0 ** x,
    ]
    for fn in fns:
        assert tt.gradcheck(fn, [x])


def test_operand_dtype_follows_the_tensor(device):
    x = tt.tensor([1.0, 2.0], device=device)
    assert (x * 2.5).dtype == np.float32
    assert (np.ones(2, dtype=np.float64) + x).dtype == np.float32
    assert (x + np.ones(2, dtype=np.float64)).dtype == np.float32


# ---- matmul ---------------------------------------------------------------------
@st.composite
def matmul_shapes(draw):
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    kind = draw(st.sampled_from(["vv", "vm", "mv", "mm", "batched", "broadcast"]))
    if kind == "vv":
        return (k,), (k,)
    if kind == "vm":
        return (k,), (draw(st.integers(1, 3)), k, m) if draw(st.booleans()) else (k, m)
    if kind == "mv":
        return (draw(st.integers(1, 3)), n, k) if draw(st.booleans()) else (n, k), (k,)
    if kind == "mm":
        return (n, k), (k, m)
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    a_batch, b_batch = batch.input_shapes
    if kind == "batched":
        b_batch = a_batch
    return a_batch + (n, k), b_batch + (k, m)


@given(shapes=matmul_shapes(), seed=seeds)
def test_matmul_gradcheck(shapes, seed, device):
    a_shape, b_shape = shapes
    assert tt.gradcheck(lambda a, b: a @ b, [rand(a_shape, seed, device=device), rand(b_shape, seed + 1, device=device)])


@given(shapes=matmul_shapes(), seed=seeds)
def test_matmul_forward_matches_numpy(shapes, seed, device):
    a, b = rand(shapes[0], seed, device=device), rand(shapes[1], seed + 1, device=device)
    np.testing.assert_allclose(as_numpy(a @ b), as_numpy(a) @ as_numpy(b))


def test_matmul_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) @ \(4, 5\)"):
        tt.ones(2, 3) @ tt.ones(4, 5)


def test_broadcast_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2,3\).*\(4,\)|\(2, 3\).*\(4,\)"):
        tt.ones(2, 3) + tt.ones(4)


# ---- reductions --------------------------------------------------------------------
@st.composite
def shape_and_axis(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    kind = draw(st.sampled_from(["none", "int", "neg", "tuple"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(0, len(shape) - 1))
    elif kind == "neg":
        axis = -draw(st.integers(1, len(shape)))
    else:
        axis = tuple(sorted(draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))))
    return shape, axis


@pytest.mark.parametrize("op", ["sum", "mean", "max"])
@given(sa=shape_and_axis(), keepdims=st.booleans(), seed=seeds)
def test_reduction_gradcheck(op, sa, keepdims, seed, device):
    shape, axis = sa
    x = rand(shape, seed, device=device)
    if op == "max":  # distinct values: the arg-max must not flip under a perturbation
        x = tt.tensor(np.random.default_rng(seed).permutation(np.arange(x.size)).reshape(shape) * 0.1,
                      requires_grad=True, dtype=np.float64, device=device)
    expected = getattr(np, op)(as_numpy(x), axis=axis, keepdims=keepdims)
    out = getattr(x, op)(axis=axis, keepdims=keepdims)
    assert out.shape == expected.shape and out.device == device
    np.testing.assert_allclose(as_numpy(out), expected)
    assert tt.gradcheck(lambda x: getattr(x, op)(axis=axis, keepdims=keepdims), [x])


def test_reductions_of_a_0d_tensor(device):
    x = tt.tensor(3.0, requires_grad=True, dtype=np.float64, device=device)
    for op in ("sum", "mean", "max"):
        assert tt.gradcheck(lambda x: getattr(x, op)(), [x])


def test_max_splits_the_gradient_between_ties(device):
    x = tt.tensor([1.0, 3.0, 3.0, 0.0], requires_grad=True, device=device)
    x.max().backward()
    np.testing.assert_array_equal(as_numpy(x.grad), [0.0, 0.5, 0.5, 0.0])


def test_gradient_of_sum_is_ones(device):
    x = rand((3, 4), 0, device=device)
    x.sum().backward()
    np.testing.assert_array_equal(as_numpy(x.grad), np.ones((3, 4)))


# ---- elementwise ---------------------------------------------------------------------
unary = {
    "exp": (lambda x: x.exp(), (-2, 2), []),
    "log": (lambda x: x.log(), (0.2, 3), []),
    "sqrt": (lambda x: x.sqrt(), (0.2, 3), []),
    "tanh": (lambda x: x.tanh(), (-3, 3), []),
    "relu": (lambda x: x.relu(), (-2, 2), [0.0]),
    "clip": (lambda x: x.clip(-0.5, 0.7), (-2, 2), [-0.5, 0.7]),
    "clip_low": (lambda x: x.clip(min=-0.5), (-2, 2), [-0.5]),
}


@pytest.mark.parametrize("name", sorted(unary))
@given(shape=shapes, seed=seeds)
def test_unary_gradcheck(name, shape, seed, device):
    fn, (low, high), kinks = unary[name]
    x = rand(shape, seed, low, high)
    x = tt.tensor(away_from(x.data, kinks), requires_grad=True, device=device)
    assert tt.gradcheck(fn, [x])


def test_unary_forward_matches_numpy(device):
    x = np.linspace(0.1, 2.0, 7)
    t = tt.tensor(x, dtype=np.float64, device=device)
    np.testing.assert_allclose(as_numpy(t.exp()), np.exp(x))
    np.testing.assert_allclose(as_numpy(t.log()), np.log(x))
    np.testing.assert_allclose(as_numpy(t.sqrt()), np.sqrt(x))
    np.testing.assert_allclose(as_numpy(t.tanh()), np.tanh(x))
    np.testing.assert_allclose(as_numpy((t - 1).relu()), np.maximum(x - 1, 0))
    np.testing.assert_allclose(as_numpy(t.clip(0.5, 1.5)), np.clip(x, 0.5, 1.5))


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seed=seeds)
def test_where_gradcheck(shapes, seed, device):
    c_shape, a_shape, b_shape = shapes.input_shapes
    cond = np.random.default_rng(seed).random(c_shape) > 0.5
    a, b = rand(a_shape, seed, device=device), rand(b_shape, seed + 1, device=device)
    out = tt.where(cond, a, b)
    np.testing.assert_array_equal(as_numpy(out), np.where(cond, as_numpy(a), as_numpy(b)))
    assert tt.gradcheck(lambda a, b: tt.where(cond, a, b), [a, b])


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), seed=seeds)
def test_masked_fill_gradcheck(shapes, seed, device):
    x_shape, m_shape = shapes.input_shapes
    assume(np.broadcast_shapes(x_shape, m_shape) == tuple(x_shape))
    mask = np.random.default_rng(seed).random(m_shape) > 0.5
    x = rand(x_shape, seed, device=device)
    np.testing.assert_array_equal(as_numpy(x.masked_fill(mask, -7.0)), np.where(mask, -7.0, as_numpy(x)))
    assert tt.gradcheck(lambda x: x.masked_fill(mask, -7.0), [x])


# ---- shape ops -------------------------------------------------------------------
@given(shape=shapes, seed=seeds, data=st.data())
def test_reshape_gradcheck(shape, seed, data, device):
    x = rand(shape, seed, device=device)
    n = x.size
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    d = data.draw(st.sampled_from(divisors))
    new = data.draw(st.sampled_from([(d, n // d), (n,), (-1, d), (1, n, 1)]))
    assert tt.gradcheck(lambda x: x.reshape(new), [x])


@given(shape=shapes, seed=seeds, data=st.data())
def test_transpose_permute_gradcheck(shape, seed, data, device):
    x = rand(shape, seed, device=device)
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    np.testing.assert_array_equal(as_numpy(x.permute(*perm)), as_numpy(x).transpose(perm))
    assert tt.gradcheck(lambda x: x.transpose(perm) if perm else x.transpose(), [x])
    assert tt.gradcheck(lambda x: x.T, [x])


def test_transpose_needs_a_full_permutation():
    with pytest.raises(ValueError, match="swapaxes"):
        tt.ones(2, 3, 4).transpose(0, 1)
    x = rand((2, 3, 4), 0)
    assert x.swapaxes(0, 2).shape == (4, 3, 2)
    assert tt.gradcheck(lambda x: x.swapaxes(-1, -2), [x])


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), seed=seeds)
def test_expand_gradcheck(shapes, seed, device):
    x_shape = shapes.input_shapes[0]
    x = rand(x_shape, seed, device=device)
    assert tt.gradcheck(lambda x: x.expand(shapes.result_shape), [x])
    assert tt.gradcheck(lambda x: x.broadcast_to((2,) + shapes.result_shape), [x])


@st.composite
def index_cases(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    kind = draw(st.sampled_from(["int", "slice", "step", "array", "repeated", "mixed", "bool", "none"]))
    n = shape[0]
    if kind == "int":
        return shape, draw(st.integers(-n, n - 1))
    if kind == "slice":
        a = draw(st.integers(0, n - 1))
        return shape, slice(a, draw(st.integers(a + 1, n)))
    if kind == "step":
        return shape, (slice(None, None, -1),) + (slice(None),) * (len(shape) - 1)
    if kind == "array":
        return shape, np.array(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=6)))
    if kind == "repeated":
        return shape, np.array([0] * 3 + [n - 1] * 2)
    if kind == "mixed" and len(shape) >= 2:
        rows = np.array(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4)))
        return shape, (rows, slice(0, shape[1]))
    if kind == "bool":
        return shape, np.random.default_rng(n).random(shape) > 0.4
    return shape, (None, Ellipsis)


@given(case=index_cases(), seed=seeds)
def test_getitem_gradcheck(case, seed, device):
    shape, index = case
    x = rand(shape, seed, device=device)
    np.testing.assert_array_equal(as_numpy(x[index]), as_numpy(x)[index])
    assert tt.gradcheck(lambda x: x[index], [x])


def test_getitem_repeated_indices_accumulate(device):
    x = tt.tensor([1.0, 2.0, 3.0], requires_grad=True, device=device)
    x[np.array([0, 0, 2, 0])].sum().backward()
    np.testing.assert_array_equal(as_numpy(x.grad), [3.0, 0.0, 1.0])


def test_getitem_with_a_tensor_index(device):
    x = tt.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True, device=device)
    x[tt.tensor([1, 1], device=device)].sum().backward()
    np.testing.assert_array_equal(as_numpy(x.grad), [[0.0, 0.0], [2.0, 2.0]])


@given(n=st.integers(1, 4), shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3),
       data=st.data(), seed=seeds)
def test_concatenate_stack_gradcheck(n, shape, data, seed, device):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    pieces = []
    for i, s in enumerate(sizes):
        piece_shape = list(shape)
        piece_shape[axis] = s
        pieces.append(rand(tuple(piece_shape), seed + i, device=device))
    np.testing.assert_array_equal(as_numpy(tt.concatenate(pieces, axis)),
                                  np.concatenate([as_numpy(p) for p in pieces], axis))
    assert tt.gradcheck(lambda *ps: tt.concatenate(ps, axis=axis), pieces)
    same = [rand(shape, seed + i, device=device) for i in range(n)]
    stack_axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    assert tt.gradcheck(lambda *ps: tt.stack(ps, axis=stack_axis), same)


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6), data=st.data(), seed=seeds)
def test_split_gradcheck(shape, data, seed, device):
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    size = data.draw(st.integers(1, n))
    x = rand(shape, seed, device=device)
    pieces = x.split(size, axis=axis)
    assert sum(p.shape[axis] for p in pieces) == n
    weights = [float(i + 1) for i in range(len(pieces))]
    assert tt.gradcheck(lambda x: tt.concatenate([p * w for p, w in zip(x.split(size, axis), weights)], axis), [x])


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), data=st.data(), seed=seeds)
def test_unbind_gradcheck(shape, data, seed, device):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = rand(shape, seed, device=device)
    pieces = x.unbind(axis)
    assert len(pieces) == shape[axis]
    for i, p in enumerate(pieces):
        np.testing.assert_array_equal(as_numpy(p), np.take(as_numpy(x), i, axis=axis))
    used = data.draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    assume(any(used))

    def f(x):  # pieces left unused get a zero gradient
        return tt.stack([p * (i + 1.0) for i, (p, u) in enumerate(zip(x.unbind(axis), used)) if u])

    assert tt.gradcheck(f, [x])


def test_split_pieces_are_outputs_of_one_node(device):
    x = tt.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True, device=device)
    a, b = x.split([1, 3], axis=1)
    assert a._ctx is b._ctx and (a._index, b._index) == (0, 1)
    (a.sum() * 2 + (b * b).sum()).backward()
    np.testing.assert_array_equal(as_numpy(x.grad), np.where(np.arange(4) == 0, 2.0, 2 * as_numpy(x)))
    q, k, v = tt.tensor(np.ones((3, 2)), requires_grad=True, device=device).unbind(0)
    assert q.shape == (2,) and q._ctx is v._ctx


def test_backward_from_one_piece_of_a_split(device):
    x = tt.tensor(np.arange(6.0), requires_grad=True, device=device)
    a, b = x.split(3)
    b.backward(np.full(3, 5.0))
    np.testing.assert_array_equal(as_numpy(x.grad), [0, 0, 0, 5, 5, 5])


def test_unbind_of_a_transposed_view_gives_a_contiguous_gradient_back(device):
    # qkv as the attention layer makes it: (B, T, 3C) -> (3, B, H, T, D); the gradient of the unbound
    # pieces must land in (B, T, 3C) order, so the reshape back is a view and not a copy
    y = tt.tensor(np.random.default_rng(0).standard_normal((2, 5, 12)), requires_grad=True, device=device)
    q, k, v = y.reshape(2, 5, 3, 2, 2).permute(2, 0, 3, 1, 4).unbind(0)
    (q * 1.0 + k * 2.0 + v * 3.0).sum().backward()
    expected = np.broadcast_to(np.repeat([1.0, 2.0, 3.0], 4), (2, 5, 12))
    np.testing.assert_array_equal(as_numpy(y.grad), expected)
    assert y.grad.flags.c_contiguous


def test_unbind_axis_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="axis 2 is out of range for a tensor of shape"):
        tt.ones(2, 3).unbind(2)


def test_a_gradient_handed_to_a_leaf_and_a_node_is_not_shared(device):
    # x + c hands one array to the leaf x and to c's node: x's later gradients must
    # not be added into the array that c's node still reads
    x = tt.tensor([1.0, 2.0], requires_grad=True, device=device)
    c = x * 3.0
    d = x * 5.0
    ((x + c) * 1.0 + d).sum().backward()
    np.testing.assert_array_equal(as_numpy(x.grad), [9.0, 9.0])
    y = tt.tensor([1.0, 2.0], requires_grad=True, device=device)
    (y + y * 2.0 + y.exp() * 0.0).backward(np.ones(2))
    np.testing.assert_array_equal(as_numpy(y.grad), [3.0, 3.0])


def test_gradients_from_many_consumers_add_up_and_leave_their_sources_alone(device):
    x = tt.tensor([0.5, -1.0], requires_grad=True, dtype=np.float64, device=device)
    y = x.exp()
    z = y * 2.0 + y * 3.0 + y.tanh() + y      # four contributions to dL/dy, some added in place
    z.backward(np.ones(2), retain_graph=True)
    e = np.exp(as_numpy(x))
    expected = (5.0 + (1 - np.tanh(e) ** 2) + 1.0) * e
    np.testing.assert_allclose(as_numpy(x.grad), expected, rtol=1e-15)
    x.grad = None
    z.backward(np.ones(2))                    # the retained graph gives the same again
    np.testing.assert_allclose(as_numpy(x.grad), expected, rtol=1e-15)


def test_split_sections_must_cover_the_axis():
    with pytest.raises(ValueError, match="add up to 5"):
        tt.ones(6).split([2, 3])


# ---- engine properties ---------------------------------------------------------------
def test_x_plus_x_accumulates_to_two(device):
    x = tt.tensor([1.0, -2.0], requires_grad=True, device=device)
    (x + x).sum().backward()
    np.testing.assert_array_equal(as_numpy(x.grad), [2.0, 2.0])


def test_two_backward_calls_add_up(device):
    x = tt.tensor([1.0, 2.0], requires_grad=True, device=device)
    (x * x).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(as_numpy(x.grad), [4.0, 8.0])
    y = (3 * x).sum()
    x.grad = None
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(as_numpy(x.grad), [6.0, 6.0])


def test_backward_twice_on_a_freed_graph_says_retain_graph():
    x = tt.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


@given(shape=shapes, seed=seeds, alpha=st.floats(-3, 3), beta=st.floats(-3, 3))
def test_backward_is_linear_in_the_upstream_gradient(shape, seed, alpha, beta, device):
    x = rand(shape, seed, device=device)
    rng = np.random.default_rng(seed)
    g1, g2 = rng.standard_normal(shape), rng.standard_normal(shape)

    def grad_for(g):
        x.grad = None
        (x * x.tanh() + x.exp()).backward(g)
        return as_numpy(x.grad)

    combined = grad_for(alpha * g1 + beta * g2)
    np.testing.assert_allclose(combined, alpha * grad_for(g1) + beta * grad_for(g2), rtol=1e-9, atol=1e-9)


def test_no_grad_records_nothing(device):
    x = tt.tensor([1.0, 2.0], requires_grad=True, device=device)
    with tt.no_grad():
        y = (x * 2).exp().sum()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()

    @tt.no_grad()
    def f(t):
        return t * 3

    assert not f(x).requires_grad
    assert tt.is_grad_enabled()


def test_a_graph_ten_thousand_ops_deep():
    x = tt.tensor(1.0, requires_grad=True, dtype=np.float64)
    y = x
    for _ in range(10_000):
        y = y * 1.0001 + 0.0
    y.backward()
    assert x.grad == pytest.approx(1.0001 ** 10_000)


def test_backward_frees_saved_buffers(device):
    x = tt.tensor(np.ones(3), requires_grad=True, device=device)
    h = x.exp()
    y = (h * h).sum()
    node = h._ctx
    assert vars(node)
    y.backward()
    assert not vars(node) and node.inputs is None


def test_inputs_that_need_no_grad_get_none(device):
    x = tt.tensor(np.ones((2, 3)), device=device)
    w = tt.tensor(np.ones((3, 4)), requires_grad=True, device=device)
    (x @ w).sum().backward()
    assert x.grad is None
    np.testing.assert_array_equal(as_numpy(w.grad), np.full((3, 4), 2.0))


def test_leaf_grads_do_not_alias_each_other(device):
    a = tt.tensor([1.0, 2.0], requires_grad=True, device=device)
    b = tt.tensor([3.0, 4.0], requires_grad=True, device=device)
    (a + b).sum().backward()
    a.grad *= 10  # an optimizer may scale gradients in place
    np.testing.assert_array_equal(as_numpy(b.grad), [1.0, 1.0])


def test_backward_on_a_non_scalar_says_what_to_pass():
    x = tt.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"y.backward\(grad\).*shape \(2,\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="grad has shape"):
        (x * 2).backward(np.ones(3))


def test_only_floats_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        tt.tensor([1, 2], requires_grad=True)


def test_creation_and_dtypes(device):
    assert tt.tensor([1.0, 2.0], device=device).dtype == np.float32
    assert tt.tensor([1, 2], device=device).dtype == np.int64
    assert tt.zeros(2, 3, device=device).shape == (2, 3) and tt.zeros(2, 3, device=device).dtype == np.float32
    assert tt.ones((2, 3), dtype=np.float64, device=device).dtype == np.float64
    assert tt.arange(5, device=device).dtype == np.int64
    assert tt.arange(0.0, 1.0, 0.25, device=device).dtype == np.float32
    tt.manual_seed(3)
    a = tt.randn(4, 5, device=device)
    tt.manual_seed(3)
    np.testing.assert_array_equal(as_numpy(a), tt.randn(4, 5).numpy())   # drawn on the CPU, then moved
    assert a.dtype == np.float32 and tt.randn(2, dtype=np.float64, device=device).dtype == np.float64
    assert tt.rand(3, device=device).device == device
    x = tt.tensor([[1.5]], device=device)
    assert x.item() == 1.5 and x.ndim == 2 and x.device == device
    assert isinstance(x.numpy(), np.ndarray)
    assert x.detach().requires_grad is False and x.detach().device == device
    assert "tensor(array([[1.5]]" in repr(x) and ("device='cuda'" in repr(x)) == (device == "cuda")


def test_tensor_keeps_the_device_its_data_is_on(device):
    x = tt.tensor([1.0, 2.0], device=device)
    for same in (tt.tensor(x), tt.tensor(x.data), tt.tensor(x.data, dtype=np.float64)):
        assert same.device == device
    assert tt.tensor([1.0]).device == tt.tensor(np.ones(1)).device == "cpu"    # host data: the CPU
    assert tt.tensor(x.data, device="cpu").device == "cpu"                     # unless told otherwise
    np.testing.assert_array_equal(tt.tensor(x, device="cpu").numpy(), [1.0, 2.0])


def test_float64_end_to_end(device):
    x = tt.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True, dtype=np.float64, device=device)
    y = ((x @ x.T).tanh().exp() / 3).mean()
    y.backward()
    assert y.dtype == np.float64 and x.grad.dtype == np.float64


def test_cast_is_differentiable(device):
    x = rand((3,), 1, device=device)
    y = x.to(dtype=np.float32)
    assert y.dtype == np.float32 and y.device == device
    (y * np.array([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(as_numpy(x.grad), [1.0, 2.0, 3.0])


def test_moving_between_devices_is_differentiable(device):
    x = rand((2, 3), 4)
    y = x.to(device)
    assert y.device == device and (y is x) == (device == "cpu")
    back = (y * 2.0).to("cpu")
    assert back.device == "cpu"
    (back * np.arange(6.0).reshape(2, 3)).sum().backward()
    assert x.grad is not None and tt.get_array_module(x.grad) is np          # the gradient comes home
    np.testing.assert_array_equal(x.grad, 2.0 * np.arange(6.0).reshape(2, 3))


# ---- devices ---------------------------------------------------------------------------
def test_ops_on_each_device(device):
    x = rand((3, 4), 0, device=device)
    w = rand((4, 2), 1, device=device)
    assert x.device == device
    out = ((x @ w).tanh() * 2 + 1).sum(axis=0)
    assert out.device == device
    assert tt.gradcheck(lambda x, w: ((x @ w).tanh() * 2 + 1).sum(axis=0), [x, w])
    raw = x.data[0]                                      # a bare array on the same device mixes in too
    np.testing.assert_allclose((x + raw).numpy(), x.numpy() + x.numpy()[0])


def test_to_cuda_without_cupy_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("no cupy")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    monkeypatch.delitem(__import__("sys").modules, "cupy", raising=False)
    with pytest.raises(RuntimeError, match="needs CuPy"):
        tt.ones(2).to("cuda")


def test_unknown_device():
    with pytest.raises(ValueError, match="unknown device"):
        tt.ones(2).to("tpu")


# ---- gradcheck itself ------------------------------------------------------------------
class _WrongSquare(tt.Function):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return g * self.x  # wrong on purpose: the derivative is 2x


def test_gradcheck_catches_a_wrong_gradient_and_names_the_worst_element(device):
    x = tt.tensor([0.5, -3.0, 1.0], requires_grad=True, dtype=np.float64, device=device)
    with pytest.raises(tt.GradcheckError, match=r"input 0 \(shape \(3,\)\) differs at index \(1,\): backward gives .* finite differences give"):
        tt.gradcheck(lambda x: _WrongSquare.apply(x).sum(), [x])
    with pytest.raises(tt.GradcheckError, match="directional"):
        tt.gradcheck(lambda x: _WrongSquare.apply(x), [x], mode="directional")


def test_directional_gradcheck_on_a_large_input(device):
    x = rand((64, 64), 5, device=device)
    w = rand((64, 32), 6, device=device)
    assert tt.gradcheck(lambda x, w: (x @ w).tanh(), [x, w], mode="directional", n_directions=3)


def test_gradcheck_sampled_elements(device):
    x = rand((30, 30), 2, device=device)
    assert tt.gradcheck(lambda x: (x * x).exp(), [x], max_elements=20)


def test_allocator_tuning_can_be_turned_off(monkeypatch):
    from tinytensor.backend import tune_allocator

    monkeypatch.setenv("TINYTENSOR_TUNE_MALLOC", "0")
    assert tune_allocator() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_tuned_allocator_keeps_a_freed_large_array_for_the_next():
    # a 400 MB logits array, scaled down: freed, then allocated again, it must not be faulted in again
    import resource

    from tinytensor.backend import tune_allocator

    if not tune_allocator():
        pytest.skip("no glibc mallopt here")
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # NumPy 2 / 1
    hugepages = multiarray._get_madvise_hugepage()
    multiarray._set_madvise_hugepage(False)                  # count 4 KiB pages, one fault each
    try:
        np.ones(64 << 18, dtype=np.float32)                  # 64 MiB, freed at once
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        np.ones(64 << 18, dtype=np.float32)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    finally:
        multiarray._set_madvise_hugepage(hugepages)
    assert faults < 1000, f"{faults} page faults for 16384 pages that were freed just before"


# a fresh process: make one tensor, then count the page faults of a 64 MiB array freed just before
_FAULTS_AFTER_FIRST_TENSOR = """
import resource, numpy as np, tinytensor as tt
multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
multiarray._set_madvise_hugepage(False)                  # count 4 KiB pages, one fault each
tt.tensor([1.0])
np.ones(64 << 18, dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(64 << 18, dtype=np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_the_first_tensor_tunes_the_allocator_unless_turned_off():
    import os
    import subprocess

    from tinytensor.backend import tune_allocator

    if not tune_allocator():
        pytest.skip("no glibc mallopt here")

    def faults(**env):
        out = subprocess.run([sys.executable, "-c", _FAULTS_AFTER_FIRST_TENSOR], env={**os.environ, **env},
                             capture_output=True, text=True, check=True)
        return int(out.stdout)

    assert faults() < 1000                                   # kept for reuse: no page faulted in again
    assert faults(TINYTENSOR_TUNE_MALLOC="0") > 10_000       # glibc's default: unmapped, 16384 pages again


def test_gradcheck_names_an_unknown_mode_before_running_anything():
    calls = []

    def fn(x):
        calls.append(1)
        return x * 2

    with pytest.raises(ValueError, match="mode must be 'full' or 'directional', got 'sideways'"):
        tt.gradcheck(fn, [tt.tensor(np.ones(2), requires_grad=True)], mode="sideways")
    assert not calls


def test_apply_takes_none_for_an_optional_input_left_out():
    class Shift(tt.Function):                     # y = x + b, b optional
        def forward(self, x, b):
            self.seen_b = b
            return x + b if b is not None else x.copy()

        def backward(self, g):
            return g, (g if self.needs_grad[1] else None)

    x = tt.tensor([1.0, 2.0], requires_grad=True)
    y = Shift.apply(x, None)
    assert y._ctx.seen_b is None and y._ctx.needs_grad == (True, False) and y._ctx.inputs == (x, None)
    (y * y).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    b = tt.tensor([10.0, 20.0], requires_grad=True)
    Shift.apply(x, b).sum().backward()
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])
