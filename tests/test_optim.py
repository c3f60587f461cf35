"""Optimizers against their update formulas worked out by hand, clipping, the schedule, state dicts."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import as_numpy

import tinytensor as tt
from tinytensor import gradbuffer, nn, optim, serialize

W0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
B0 = np.array([0.1, -0.2])
GRADS = [  # (grad of w, grad of b) for step 1 and step 2
    (np.array([[0.3, -0.2, 0.1], [0.0, 0.5, -0.4]]), np.array([0.05, -0.6])),
    (np.array([[-0.1, 0.4, 0.2], [0.3, -0.3, 0.0]]), np.array([0.2, 0.1])),
]


def params(device="cpu"):
    # copies: a Parameter shares the memory of the array it is given
    w = nn.Parameter(W0.copy(), dtype=np.float64, device=device)
    b = nn.Parameter(B0.copy(), dtype=np.float64, device=device)
    return w, b


def set_grads(w, b, step):
    gw, gb = GRADS[step]
    xp = tt.get_array_module(w.data)
    w.grad, b.grad = xp.array(gw), xp.array(gb)  # copies: clipping scales grads in place


# ---- AdamW ------------------------------------------------------------------------
def test_adamw_matches_hand_formula_with_decay_and_no_decay_group(device):
    w, b = params(device)
    lr, (b1, b2), eps, wd = 0.1, (0.8, 0.9), 1e-3, 0.5
    opt = optim.AdamW([{"params": [w]}, {"params": [b], "weight_decay": 0.0}], lr=lr, betas=(b1, b2), eps=eps,
                      weight_decay=wd)

    def adamw(p, m, v, g, t, decay):
        p = p * (1 - lr * decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v

    expect = {"w": (W0, 0.0, 0.0, wd), "b": (B0, 0.0, 0.0, 0.0)}
    for t in (1, 2):
        set_grads(w, b, t - 1)
        grad_w_before = w.grad.copy()
        opt.step()
        for name, p, g in (("w", w, GRADS[t - 1][0]), ("b", b, GRADS[t - 1][1])):
            value, m, v, decay = expect[name]
            value, m, v = adamw(value, m, v, g, t, decay)
            expect[name] = (value, m, v, decay)
            np.testing.assert_allclose(p.numpy(), value, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(as_numpy(w.grad), as_numpy(grad_w_before))  # the step leaves grads alone
    assert opt.state[id(w)]["step"] == 2


def test_adamw_updates_state_in_place_and_skips_params_without_grad(device):
    w, b = params(device)
    opt = optim.AdamW([w, b], lr=0.1)
    set_grads(w, b, 0)
    b.grad = None
    opt.step()
    np.testing.assert_array_equal(b.numpy(), B0)
    assert id(b) not in opt.state
    data, m, v = w.data, opt.state[id(w)]["exp_avg"], opt.state[id(w)]["exp_avg_sq"]
    set_grads(w, b, 1)
    opt.step()
    state = opt.state[id(w)]
    assert w.data is data and state["exp_avg"] is m and state["exp_avg_sq"] is v
    assert opt.state[id(b)]["step"] == 1 and state["step"] == 2


def test_lr_is_settable_per_group(device):
    w, b = params(device)
    opt = optim.AdamW([{"params": [w]}, {"params": [b]}], lr=0.1, weight_decay=0.0)
    opt.param_groups[0]["lr"] = 0.0
    set_grads(w, b, 0)
    opt.step()
    np.testing.assert_array_equal(w.numpy(), W0)
    # Adam's first step moves each element by lr (times about sign(g))
    np.testing.assert_allclose(np.abs(b.numpy() - B0), 0.1, rtol=1e-5)


# ---- SGD -----------------------------------------------------------------------------
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.0, False, 0.1), (0.9, False, 0.0),
                                                  (0.9, True, 0.1)])
def test_sgd_matches_hand_formula(device, momentum, nesterov, wd):
    w, b = params(device)
    lr = 0.1
    opt = optim.SGD([w, b], lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    expect = [W0, B0]
    bufs = [np.zeros_like(W0), np.zeros_like(B0)]
    for t in range(2):
        set_grads(w, b, t)
        opt.step()
        for i, p in enumerate((w, b)):
            d = GRADS[t][i] + wd * expect[i]
            if momentum:
                bufs[i] = momentum * bufs[i] + d
                d = d + momentum * bufs[i] if nesterov else bufs[i]
            expect[i] = expect[i] - lr * d
            np.testing.assert_allclose(p.numpy(), expect[i], rtol=1e-12, atol=1e-14)


def test_bad_options_are_clear_errors():
    w, b = params()
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.AdamW([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty"):
        optim.AdamW([])
    with pytest.raises(ValueError, match="weight_decy"):
        optim.AdamW([{"params": [w], "weight_decy": 0.0}])
    with pytest.raises(ValueError, match="more than once"):
        optim.AdamW([{"params": [w, b]}, {"params": [b]}])
    with pytest.raises(TypeError, match="require grad"):
        optim.SGD([tt.zeros(2)], lr=0.1)


def test_zero_grad_and_weight_decay_groups(device):
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Embedding(5, 4)).to(device)
    decay, no_decay = optim.param_groups_for_weight_decay(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    model[0].weight.requires_grad = False            # frozen parameters are left out
    decay, no_decay = optim.param_groups_for_weight_decay(model, 0.1)
    assert {id(p) for p in decay["params"]} == {id(model[2].weight)}
    model[0].weight.requires_grad = True
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, 0.1))
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


# ---- clipping --------------------------------------------------------------------------
def test_clip_grad_norm_scales_to_max_norm(device):
    w, b = params(device)
    unused = nn.Parameter(np.ones(3), device=device)  # no grad: skipped
    set_grads(w, b, 0)
    expected = np.linalg.norm(np.concatenate([GRADS[0][0].ravel(), GRADS[0][1].ravel()]))
    total = optim.clip_grad_norm_([w, b, unused], max_norm=0.5)
    assert isinstance(total, float) and total == pytest.approx(expected, rel=1e-12)
    clipped = np.concatenate([tt.tensor(w.grad).numpy().ravel(), tt.tensor(b.grad).numpy().ravel()])
    assert np.linalg.norm(clipped) == pytest.approx(0.5, rel=1e-5)
    np.testing.assert_allclose(clipped, np.concatenate([g.ravel() for g in GRADS[0]]) * 0.5 / expected, rtol=1e-5)
    # already below the limit: untouched
    set_grads(w, b, 0)
    assert optim.clip_grad_norm_([w, b], max_norm=10.0) == pytest.approx(expected)
    np.testing.assert_array_equal(tt.tensor(w.grad).numpy(), GRADS[0][0])
    assert optim.clip_grad_norm_([unused], max_norm=1.0) == 0.0


# ---- schedule -----------------------------------------------------------------------------
def test_cosine_schedule_boundaries():
    lr = lambda step: optim.cosine_schedule(step, max_lr=1.0, min_lr=0.1, warmup_steps=10, decay_steps=110)  # noqa: E731
    assert lr(0) == pytest.approx(0.1)  # (0 + 1) / 10 of max_lr
    assert lr(4) == pytest.approx(0.5)
    assert lr(9) == pytest.approx(1.0)  # warmup reaches max_lr on its last step
    assert lr(10) == pytest.approx(1.0)  # the cosine starts at max_lr
    assert lr(60) == pytest.approx(0.55)  # halfway down: the midpoint of max and min
    assert lr(110) == pytest.approx(0.1)
    assert lr(111) == lr(10_000) == 0.1
    assert optim.cosine_schedule(0, 1.0, 0.1, warmup_steps=0, decay_steps=10) == 1.0
    with pytest.raises(ValueError, match="warmup_steps <= decay_steps"):
        optim.cosine_schedule(0, 1.0, 0.1, warmup_steps=10, decay_steps=5)


@given(step=st.integers(0, 500), warmup=st.integers(0, 50), decay=st.integers(0, 300))
def test_cosine_schedule_stays_in_range_and_never_rises_after_warmup(step, warmup, decay):
    decay = max(decay, warmup)
    lr = optim.cosine_schedule(step, 3e-4, 3e-5, warmup, decay)
    assert 0 < lr <= 3e-4 * (1 + 1e-12)
    if step >= warmup:
        assert 3e-5 * (1 - 1e-12) <= lr <= optim.cosine_schedule(max(step - 1, warmup), 3e-4, 3e-5, warmup, decay)


# ---- state dicts ----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda ps: optim.AdamW([{"params": ps[:1]}, {"params": ps[1:], "weight_decay": 0.0}], lr=0.05),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
], ids=["adamw", "sgd"])
def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path, make, device):
    w, b = params(device)
    opt = make([w, b])
    for t in range(2):
        set_grads(w, b, t)
        opt.step()
    opt.param_groups[0]["lr"] = 0.02  # as a schedule would
    state = opt.state_dict()
    serialize.save(state["arrays"], tmp_path / "opt.safetensors")
    (tmp_path / "opt.json").write_text(json.dumps({k: state[k] for k in ("scalars", "param_groups")}))

    w2, b2 = nn.Parameter(w.data.copy()), nn.Parameter(b.data.copy())
    opt2 = make([w2, b2])
    opt2.load_state_dict({"arrays": serialize.load(tmp_path / "opt.safetensors", device=device),
                          **json.loads((tmp_path / "opt.json").read_text())})
    assert opt2.param_groups[0]["lr"] == 0.02
    for p, q in ((w, w2), (b, b2)):
        p.grad, q.grad = (tt.get_array_module(p.data).full(p.shape, 0.3) for _ in range(2))
    opt.step()
    opt2.step()
    np.testing.assert_array_equal(w.numpy(), w2.numpy())
    np.testing.assert_array_equal(b.numpy(), b2.numpy())


def test_optimizer_state_dict_is_a_snapshot_and_names_its_parts(device):
    w, b = params(device)
    opt = optim.AdamW([w, b])
    set_grads(w, b, 0)
    opt.step()
    state = opt.state_dict()
    assert sorted(state["arrays"]) == ["0.exp_avg", "0.exp_avg_sq", "1.exp_avg", "1.exp_avg_sq"]
    assert state["scalars"] == {"0.step": 1, "1.step": 1}
    assert state["param_groups"] == [{"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
                                      "params": [0, 1]}]
    saved = as_numpy(state["arrays"]["0.exp_avg"])
    opt.step()
    np.testing.assert_array_equal(as_numpy(state["arrays"]["0.exp_avg"]), saved)
    assert not np.array_equal(as_numpy(opt.state[id(w)]["exp_avg"]), saved)


def test_optimizer_load_state_dict_mismatches_are_named(device):
    w, b = params(device)
    opt = optim.AdamW([w, b])
    set_grads(w, b, 0)
    opt.step()
    good = opt.state_dict()

    other = optim.AdamW([{"params": [nn.Parameter(np.zeros(3))]}])
    with pytest.raises(ValueError) as err:
        other.load_state_dict(good)
    msg = str(err.value)
    assert "holds parameters [0, 1]" in msg and "'1.exp_avg'" in msg and "shape (2, 3)" in msg

    bad = {**good, "arrays": dict(good["arrays"]), "scalars": {}}
    del bad["arrays"]["1.exp_avg_sq"]
    bad["arrays"]["0.momentum_buffer"] = np.zeros((2, 3))
    with pytest.raises(ValueError) as err:
        opt.load_state_dict(bad)
    msg = str(err.value)
    assert "'0.momentum_buffer'" in msg and "parameter 1 has state but lacks ['exp_avg_sq', 'step']" in msg

    with pytest.raises(ValueError, match="1 parameter groups, this optimizer has 2"):
        optim.AdamW([{"params": [w]}, {"params": [b]}]).load_state_dict(good)
    with pytest.raises(ValueError, match="not an optimizer state dict"):
        opt.load_state_dict({"0.exp_avg": np.zeros(3)})
    np.testing.assert_array_equal(as_numpy(opt.state[id(w)]["exp_avg"]), as_numpy(good["arrays"]["0.exp_avg"]))  # untouched


def test_optimizer_state_follows_parameter_device(device):
    w, b = params()
    opt = optim.AdamW([w, b])
    set_grads(w, b, 0)
    opt.step()
    w2 = nn.Parameter(w.data.copy(), device=device)
    b2 = nn.Parameter(b.data.copy(), device=device)
    opt2 = optim.AdamW([w2, b2])
    opt2.load_state_dict(opt.state_dict())
    assert tt.get_array_module(opt2.state[id(w2)]["exp_avg"]) is tt.get_array_module(w2.data)
    set_grads(w, b, 1)
    set_grads(w2, b2, 1)
    opt.step()
    opt2.step()
    np.testing.assert_allclose(w2.numpy(), w.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b2.numpy(), b.numpy(), rtol=1e-12)


# ---- flat storage -----------------------------------------------------------------------
def _toy_model(dtype, device="cpu"):
    tt.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 3), nn.Linear(3, 2))
    model.to(device, dtype=dtype)
    model[3].weight.requires_grad_(False)        # frozen, as LoRA leaves the base weights
    return model


def _loss(model, rng, dtype):
    x = tt.tensor(rng.standard_normal((4, 5)), dtype=dtype, device=model[0].weight.device)
    return (model(x) ** 2).mean()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_flat_step_is_bit_identical_to_one_parameter_at_a_time(dtype, kind, device):
    def make(params_groups):
        if kind == "adamw":
            return optim.AdamW(params_groups, lr=0.05, betas=(0.8, 0.95), weight_decay=0.3)
        return optim.SGD(params_groups, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)

    flat_model, ref_model = _toy_model(dtype, device), _toy_model(dtype, device)
    flat = make(optim.param_groups_for_weight_decay(flat_model, 0.3))
    # the reference: one optimizer per parameter, so every update touches one parameter alone
    refs = [make([{**group, "params": [p]}]) for group in optim.param_groups_for_weight_decay(ref_model, 0.3)
            for p in group["params"]]
    assert flat.flat_grad is not None and all(r.flat_grad.size == r.param_groups[0]["params"][0].size for r in refs)
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    for step in range(4):
        for model, rng, opts in ((flat_model, rng_a, [flat]), (ref_model, rng_b, refs)):
            for opt in opts:
                opt.zero_grad()
            _loss(model, rng, dtype).backward()
            if step == 2:  # a parameter without a gradient this step: skipped, and its step count falls behind
                model[0].bias.grad = None
            optim.clip_grad_norm_(model.parameters(), 0.5)
            for opt in opts:
                opt.step()
        for (name, p), q in zip(flat_model.named_parameters(), ref_model.parameters()):
            np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=f"{name} after step {step}")
    assert gradbuffer.slot(flat_model[3].weight) is None and flat_model[3].weight.grad is None
    state, ref_state = flat.state_dict(), [r.state_dict() for r in refs]
    for i, r in enumerate(ref_state):
        for name, value in r["arrays"].items():
            np.testing.assert_array_equal(as_numpy(state["arrays"][f"{i}.{name.split('.')[1]}"]), as_numpy(value))


def test_parameters_grads_and_state_are_views_of_flat_buffers(device):
    model = _toy_model(np.float32, device)
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, 0.1), lr=0.1)
    params = [p for group in opt.param_groups for p in group["params"]]
    _loss(model, np.random.default_rng(0), np.float32).backward()
    flat = opt.flat_grad
    xp = tt.get_array_module(flat)
    assert flat.ndim == 1 and flat.size == sum(p.size for p in params) and xp is tt.get_array_module(params[0].data)
    offset = 0
    for p in params:
        np.testing.assert_array_equal(as_numpy(flat[offset:offset + p.size]), as_numpy(p.grad).reshape(-1))
        assert xp.shares_memory(p.grad, flat)
        offset += p.size
    opt.step()
    for name in ("exp_avg", "exp_avg_sq"):     # each state array, like the values, is one flat array
        assert all(xp.shares_memory(opt.state[id(p)][name], opt._flat.state[name]) for p in params)
    assert all(xp.shares_memory(p.data, opt._flat.data) for p in params)


def test_flat_grad_can_be_reduced_in_place_before_the_step(device):
    # what data-parallel training does: sum every rank's flat_grad in place, then step
    a, b = _toy_model(np.float64, device), _toy_model(np.float64, device)
    opt_a = optim.AdamW(optim.param_groups_for_weight_decay(a, 0.1), lr=0.1)
    opt_b = optim.AdamW(optim.param_groups_for_weight_decay(b, 0.1), lr=0.1)
    _loss(a, np.random.default_rng(0), np.float64).backward()
    _loss(b, np.random.default_rng(0), np.float64).backward()
    flat = opt_a.flat_grad
    flat *= 2.0                                  # as an Allreduce over two identical ranks
    for p in b.parameters():
        if p.grad is not None:
            p.grad = p.grad * 2.0                # the same, by hand, one parameter at a time
    opt_a.step()
    opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_zero_grad_to_zeros_keeps_every_slot_defined(device):
    model = _toy_model(np.float32, device)
    opt = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    _loss(model, np.random.default_rng(0), np.float32).backward()
    opt.zero_grad(set_to_none=False)
    assert not as_numpy(opt.flat_grad).any()
    assert all(p.grad is not None and not as_numpy(p.grad).any() for p in model.parameters() if p.requires_grad)
    _loss(model, np.random.default_rng(1), np.float32).backward()  # accumulates into the zeros
    fresh = _toy_model(np.float32, device)
    _loss(fresh, np.random.default_rng(1), np.float32).backward()
    for p, q in zip(model.parameters(), fresh.parameters()):
        if p.requires_grad:
            np.testing.assert_array_equal(as_numpy(p.grad), as_numpy(q.grad))
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_a_parameter_whose_array_was_replaced_is_moved_back_in(device):
    model = _toy_model(np.float32, device)
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, 0.1), lr=0.1)
    ref = _toy_model(np.float64, device)
    ref_opt = optim.AdamW(optim.param_groups_for_weight_decay(ref, 0.1), lr=0.1)
    model.to(dtype=np.float64)                   # after the optimizer was made: new arrays
    assert gradbuffer.slot(model[0].weight) is None
    for m, o in ((model, opt), (ref, ref_opt)):
        _loss(m, np.random.default_rng(0), np.float64).backward()
        o.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    assert model[0].weight.dtype == np.float64 and opt.flat_grad.dtype == np.float64


def test_moving_a_model_to_where_it_already_is_keeps_the_optimizer_working(device):
    # .to() that changes nothing keeps the arrays, so the flat storage stays bound to them
    model, ref = _toy_model(np.float32, device), _toy_model(np.float32, device)
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, 0.1), lr=0.1)
    ref_opt = optim.AdamW(optim.param_groups_for_weight_decay(ref, 0.1), lr=0.1)
    model.to(device, dtype=np.float32)
    for m, o in ((model, opt), (ref, ref_opt)):
        _loss(m, np.random.default_rng(0), np.float32).backward()
        o.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_array_equal(as_numpy(p), as_numpy(q))


def test_mixed_dtypes_fall_back_to_one_parameter_at_a_time(device):
    w = nn.Parameter(np.ones(3), dtype=np.float32, device=device)
    v = nn.Parameter(np.ones(2), dtype=np.float64, device=device)
    opt = optim.AdamW([w, v], lr=0.1)
    assert opt.flat_grad is None
    xp = tt.get_array_module(w.data)
    w.grad, v.grad = xp.ones(3, np.float32), xp.ones(2)
    opt.step()
    assert w.numpy()[0] < 1 and v.numpy()[0] < 1 and w.dtype == np.float32


def test_mixed_devices_fall_back_to_one_parameter_at_a_time(device):
    w = nn.Parameter(np.ones(3), device=device)
    v = nn.Parameter(np.ones(2))
    opt = optim.SGD([w, v], lr=0.5)
    assert opt.flat_grad is None or device == "cpu"
    w.grad, v.grad = tt.get_array_module(w.data).full(3, 2.0, np.float32), np.full(2, 2.0, np.float32)
    opt.step()
    assert w.device == device and v.device == "cpu"
    np.testing.assert_array_equal(w.numpy(), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(v.numpy(), [0.0, 0.0])
    assert optim.clip_grad_norm_([w, v], max_norm=1.0) == pytest.approx(np.sqrt(5 * 4.0))
    np.testing.assert_allclose(np.concatenate([as_numpy(w.grad), v.grad]), np.full(5, 1 / np.sqrt(5)), rtol=1e-5)


@pytest.mark.parametrize("make, match", [
    (lambda p: optim.AdamW([p], lr=float("nan")), r"AdamW: lr must be a finite number >= 0, got nan"),
    (lambda p: optim.AdamW([p], lr=-1.0), r"AdamW: lr must be a finite number >= 0, got -1\.0"),
    (lambda p: optim.AdamW([{"params": [p], "weight_decay": float("inf")}], lr=1e-3),
     r"AdamW: weight_decay must be a finite number >= 0, got inf"),
    (lambda p: optim.SGD([p], lr=0.1, momentum=-0.5), r"SGD: momentum must be a finite number >= 0, got -0\.5"),
])
def test_bad_optimizer_settings_name_the_option_and_value(make, match):
    with pytest.raises(ValueError, match=match):
        make(tt.tensor([1.0], requires_grad=True))
