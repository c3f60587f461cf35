"""tt.grads_of: the gradient of any tensor of a graph, leaf or intermediate, by backward's walk, writing nothing."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import as_numpy, rand, seeds

import tinytensor as tt
from tinytensor import functional as F


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f at x, one element at a time (no engine involved)."""
    g = np.zeros_like(x)
    for k in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[k] += eps
        down[k] -= eps
        g[k] = (f(up) - f(down)) / (2 * eps)
    return g


def downstream(h: np.ndarray, c: np.ndarray) -> float:
    """What the test graph computes after h, in plain NumPy: sum(tanh(h) * c) + sum(h ** 2) (h used twice)."""
    return float((np.tanh(h) * c).sum() + (h ** 2).sum())


@given(n=st.integers(1, 4), k=st.integers(1, 3), m=st.integers(1, 4), seed=seeds)
def test_intermediate_gradient_matches_finite_differences(n, k, m, seed, device):
    x, w = rand((n, k), seed, device=device), rand((m, k), seed + 1, device=device)
    c = np.random.default_rng(seed + 2).standard_normal((n, m))
    h = F.linear(x, w)                                   # the intermediate asked about, feeding two consumers
    a = h.tanh()
    loss = (a * tt.tensor(c, device=device)).sum() + (h * h).sum()
    got = tt.grads_of(loss, {"h": h, "a": a, "w": w, "loss": loss})
    h0 = as_numpy(h)
    np.testing.assert_allclose(got["h"], numerical_grad(lambda v: downstream(v, c), h0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["a"], c, rtol=1e-12)                       # d(sum(a * c))/da = c
    np.testing.assert_allclose(got["w"], got["h"].T @ as_numpy(x), rtol=1e-10)  # h = x w^T: dW = dh^T x
    np.testing.assert_array_equal(got["loss"], np.ones(()))
    assert list(got) == ["h", "a", "w", "loss"] and got["h"].shape == (n, m) and isinstance(got["h"], np.ndarray)


def test_hand_computed_gradients_of_a_small_graph():
    # loss = sum(u * v), u = 2x, v = x + y: du = v, dv = u, dx = 2 du + dv, dy = dv
    x = tt.tensor([1.0, -2.0, 3.0], requires_grad=True, dtype="float64")
    y = tt.tensor([0.5, 4.0, -1.0], requires_grad=True, dtype="float64")
    u, v = x * 2.0, x + y
    got = tt.grads_of((u * v).sum(), {"x": x, "y": y, "u": u, "v": v})
    np.testing.assert_array_equal(got["u"], [1.5, 2.0, 2.0])
    np.testing.assert_array_equal(got["v"], [2.0, -4.0, 6.0])
    np.testing.assert_array_equal(got["x"], [5.0, 0.0, 10.0])
    np.testing.assert_array_equal(got["y"], [2.0, -4.0, 6.0])


def test_outputs_of_a_multi_output_node_each_get_their_own():
    x = rand((3, 2), 0)
    p, q, r = x.unbind(0)
    loss = (p * 3.0).sum() + (q * q).sum()               # r unused
    got = tt.grads_of(loss, {"p": p, "q": q, "r": r, "x": x})
    np.testing.assert_array_equal(got["p"], [3.0, 3.0])
    np.testing.assert_array_equal(got["q"], 2 * as_numpy(q))
    np.testing.assert_array_equal(got["r"], [0.0, 0.0])
    np.testing.assert_array_equal(got["x"], np.stack([got["p"], got["q"], got["r"]]))


def test_nothing_is_written_and_the_graph_can_still_be_walked(device):
    # linear and embedding put gradients in place themselves (gradbuffer.slot_for): not here
    rng = np.random.default_rng(1)
    w = tt.tensor(rng.standard_normal((6, 3)), requires_grad=True, dtype=np.float64, device=device)
    lin = tt.tensor(rng.standard_normal((2, 3)), requires_grad=True, dtype=np.float64, device=device)
    opt = tt.optim.SGD([w, lin], lr=0.1)                 # flat storage: gradient slots exist
    loss = (F.linear(F.embedding(np.array([0, 2, 2, 5]), w), lin) ** 2).sum()
    flat = as_numpy(opt._flat.grad)
    got = tt.grads_of(loss, {"w": w, "lin": lin})
    assert w.grad is None and lin.grad is None
    np.testing.assert_array_equal(as_numpy(opt._flat.grad), flat)
    loss.backward()                                      # the graph kept its buffers
    np.testing.assert_array_equal(as_numpy(w.grad), got["w"])    # the same walk: the same floats
    np.testing.assert_array_equal(as_numpy(lin.grad), got["lin"])


def test_existing_grads_stay_as_they_were():
    x = rand((4,), 3)
    (x * x).sum().backward()
    before = x.grad.copy()
    y = (x * x).sum()
    got = tt.grads_of(y, {"x": x})
    np.testing.assert_array_equal(x.grad, before)
    np.testing.assert_array_equal(got["x"], 2 * x.data)


def test_unrelated_tensors_and_constants_get_zeros():
    x, other = rand((2, 3), 0), rand((4,), 1)
    unrelated = other * 2.0
    const = tt.tensor(np.ones((2, 3)), dtype="float64")
    got = tt.grads_of((x * const).sum(), {"other": other, "unrelated": unrelated, "const": const})
    for name, shape in (("other", (4,)), ("unrelated", (4,)), ("const", (2, 3))):
        np.testing.assert_array_equal(got[name], np.zeros(shape))
        assert got[name].dtype == np.float64


def test_a_non_scalar_loss_needs_grad_and_a_leaf_loss_works():
    x = rand((2, 2), 0)
    y = x * 3.0
    with pytest.raises(RuntimeError, match=r"shape \(2, 2\)"):
        tt.grads_of(y, {"x": x})
    with pytest.raises(RuntimeError, match=r"call tt\.grads_of\(y, tensors, grad\)"):
        tt.grads_of(y, {"x": x})
    with pytest.raises(ValueError, match=r"grads_of\(grad\): grad has shape \(3,\), but the tensor has shape \(2, 2\)"):
        tt.grads_of(y, {"x": x}, grad=np.ones(3))
    got = tt.grads_of(y, {"x": x, "y": y}, grad=np.full((2, 2), 2.0))
    np.testing.assert_array_equal(got["x"], np.full((2, 2), 6.0))
    np.testing.assert_array_equal(got["y"], np.full((2, 2), 2.0))
    s = rand((), 1)
    np.testing.assert_array_equal(tt.grads_of(s, {"s": s})["s"], np.ones(()))


def test_errors_name_what_is_wrong():
    x = rand((2,), 0)
    loss = (x * x).sum()
    with pytest.raises(TypeError, match="'h' is a ndarray, not a Tensor"):
        tt.grads_of(loss, {"x": x, "h": np.ones(2)})
    with pytest.raises(RuntimeError, match="does not require grad"):
        tt.grads_of(tt.tensor(1.0), {"x": x})
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        tt.grads_of(loss, {"x": x})
