"""Host syncs on the cuda path: each one stalls the host until the GPU's queue drains, so their
number per training step must not grow with the model (counted through the strict CuPy stand-in)."""
from __future__ import annotations

import numpy as np
import pytest

import tinytensor as tt
from gpt import GPT, GPTConfig
from gpt.train.loop import Batch, LoopConfig, Trainer
from tinytensor import optim


class _RandomWindows:
    """A Task for one Trainer step: random (B, 8) windows over a vocabulary of 11, drawn on the host."""

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def next_batch(self):
        x = self.rng.integers(0, 11, (2, 9))
        return Batch((x[:, :-1], x[:, 1:]), n_targets=16, n_tokens=16)

    def loss(self, model, rows):
        x, y = rows
        return model(x, targets=y, reduction="sum")[1]


def _count_host_syncs(monkeypatch, cupy) -> list[str]:
    """Every way a strict-cupy array reaches the host (get, float, int, bool, item...), recorded by name."""
    seen: list[str] = []

    def counted(name, method):
        def wrapper(self, *args, **kwargs):
            seen.append(name)
            return method(self, *args, **kwargs)
        return wrapper

    for name in ("get", "__float__", "__int__", "__bool__", "__index__"):
        monkeypatch.setattr(cupy.ndarray, name, counted(name, getattr(cupy.ndarray, name)))
    attribute = cupy.ndarray.__getattr__

    def getattr_counted(self, name):
        if name in ("item", "tolist"):
            seen.append(name)
        return attribute(self, name)

    monkeypatch.setattr(cupy.ndarray, "__getattr__", getattr_counted)
    return seen


@pytest.mark.cuda
def test_a_training_step_syncs_with_the_host_as_often_whatever_the_number_of_parameters(monkeypatch):
    # one sync per parameter (a float() per gradient in clipping, say) would make a GPU step wait dozens of times
    cupy = pytest.importorskip("cupy")
    if "stand-in" not in (cupy.__doc__ or ""):
        pytest.skip("counts the host syncs of the strict CuPy stand-in's arrays")

    syncs = {}
    for n_layer in (1, 4):
        tt.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=n_layer, n_head=2, n_embd=8)).to("cuda")
        opt = optim.AdamW(optim.param_groups_for_weight_decay(model, 0.1), lr=1e-3)
        cfg = LoopConfig(max_steps=2, lr=1e-3, min_lr=1e-4, warmup_steps=0, decay_steps=2, grad_accum=2,
                         grad_clip=1.0)
        trainer = Trainer(model, opt, _RandomWindows(), cfg, say=lambda text: None)
        trainer.train_step()                          # the first step makes the optimizer's state
        with monkeypatch.context() as patch:
            seen = _count_host_syncs(patch, cupy)
            trainer.train_step()
        syncs[n_layer] = list(seen)
    assert syncs[1] == syncs[4]
    assert syncs[1].count("__float__") == 1           # the gradient norm, once for all parameters
    assert syncs[1].count("item") == 2                # the loss of each micro-batch
