"""The profiler: what its table says, and that profiling changes nothing."""
from __future__ import annotations

import importlib
import io

import numpy as np
import pytest
from conftest import as_numpy

import tinytensor as tt
from gpt import GPT, GPTConfig
from tinytensor import optim

# the module (tt.tensor is the function that makes tensors)
engine = importlib.import_module("tinytensor.tensor")


def train(steps: int, profiled: bool, device: str) -> tuple[list[float], dict[str, np.ndarray]]:
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.1)).to(device)
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, 0.1), lr=1e-2)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        x, y = rng.integers(0, 17, (3, 8)), rng.integers(0, 17, (3, 8))
        with tt.profile() if profiled else _nothing():
            _, loss = model(x, targets=y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
    return losses, {n: as_numpy(p.grad) for n, p in model.named_parameters()}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_profiling_changes_no_loss_and_no_gradient(device):
    plain_losses, plain_grads = train(3, profiled=False, device=device)
    losses, grads = train(3, profiled=True, device=device)
    assert losses == plain_losses
    for name, g in plain_grads.items():
        np.testing.assert_array_equal(grads[name], g, err_msg=name)


def test_rows_count_calls_time_and_new_bytes():
    x = tt.tensor(np.ones((4, 3)), requires_grad=True)
    w = tt.tensor(np.ones((3, 5)), requires_grad=True)
    with tt.profile() as prof:
        y = (x @ w).reshape(20)
        (y * y).sum().backward()
    rows = {r.name: r for r in prof.rows()}
    assert {"MatMul", "Reshape", "Mul", "Sum", "(autograd engine)"} <= set(rows)
    mm = rows["MatMul"]
    assert mm.calls == 1 and mm.forward_s > 0 and mm.backward_s > 0
    assert mm.forward_bytes == 4 * 5 * 8                       # its (4, 5) float64 output
    assert mm.backward_bytes == (4 * 3 + 3 * 5) * 8            # dx and dw
    assert rows["Reshape"].forward_bytes == 0                  # a view allocates nothing
    assert rows["Mul"].calls == 1 and rows["Sum"].calls == 1
    totals = [r.total_s for r in prof.rows()]
    assert totals == sorted(totals, reverse=True)
    assert prof.wall_s >= sum(totals) * 0.99


def test_the_table_names_every_op_and_the_optimizer_step(device):
    p = tt.tensor(np.ones(3), requires_grad=True, device=device)
    opt = optim.SGD([p], lr=0.1)
    with tt.profile() as prof:
        (p.exp() * 2).sum().backward()
        opt.step()
    text = str(prof)
    for name in ("Exp", "Mul", "Sum", "SGD.step", "(autograd engine)", "wall"):
        assert name in text
    assert text == prof.table()
    assert len(prof.table(limit=2).splitlines()) == 1 + 2 + 2  # header, 2 rows, "more", the wall line


def test_profile_is_off_outside_the_block_and_nests():
    assert engine._profiler is None
    with tt.profile() as outer:
        with tt.profile() as inner:
            tt.tensor([1.0], requires_grad=True).exp()
        assert engine._profiler is outer
        tt.tensor([1.0], requires_grad=True).tanh()
    assert engine._profiler is None
    assert {r.name for r in inner.rows()} == {"Exp"}
    assert {r.name for r in outer.rows()} == {"Tanh"}
    with pytest.raises(ZeroDivisionError):
        with tt.profile():
            1 / 0
    assert engine._profiler is None


def test_profile_steps_prints_a_table_per_step():
    p = tt.tensor(np.ones(3), requires_grad=True)
    calls = []

    def step():
        calls.append(1)
        p.grad = None
        (p * p).sum().backward()

    out = io.StringIO()
    prof = tt.profile_steps(step, 4, warmup=2, file=out)
    assert len(calls) == 6
    assert prof.steps == 4
    text = out.getvalue()
    assert "profile of 4 steps (after 2 unprofiled)" in text and "per step" in text
    row = next(line for line in text.splitlines() if line.startswith("Mul "))
    assert row.split()[1] == "1"                               # one call per step, not 4
    with pytest.raises(ValueError, match="n >= 1"):
        tt.profile_steps(step, 0)
