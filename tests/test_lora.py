"""LoRA adapters: the fused op's gradients, freezing, merging, the adapter state dict."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from conftest import as_numpy

import tinytensor as tt
from gpt import GPT, GPTConfig
from gpt.lora import LoRALinear, apply_lora, lora_linear, lora_state_dict, merge_lora
from tinytensor import nn, optim


def tiny_gpt(device: str = "cpu", **overrides) -> GPT:
    tt.manual_seed(0)
    cfg = dict(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
    return GPT(GPTConfig(**{**cfg, **overrides})).to(device)


@given(lead=st.lists(st.integers(1, 3), min_size=1, max_size=2), n_in=st.integers(1, 5), n_out=st.integers(1, 5),
       rank=st.integers(1, 3), with_bias=st.booleans(), base_trainable=st.booleans(), seed=st.integers(0, 2**16))
def test_lora_linear_gradcheck(lead, n_in, n_out, rank, with_bias, base_trainable, seed, device):
    rng = np.random.default_rng(seed)

    def t(*shape, grad=True):
        return tt.tensor(rng.standard_normal(shape), requires_grad=grad, dtype="float64", device=device)

    x, a, b = t(*lead, n_in), t(rank, n_in), t(n_out, rank)   # B nonzero, so every path carries a gradient
    w = t(n_out, n_in, grad=base_trainable)
    bias = t(n_out, grad=base_trainable) if with_bias else None
    inputs = [x, a, b, w] + ([bias] if with_bias else [])
    tt.gradcheck(lambda x, a, b, w, *rest: lora_linear(x, a, b, w, rest[0] if rest else None, scale=0.7), inputs)


def test_frozen_base_gets_no_gradient(device):
    tt.manual_seed(1)
    layer = LoRALinear(nn.Linear(4, 3, device=device), rank=2, alpha=4.0)
    assert layer.lora_A.device == layer.lora_B.device == device     # the adapters go where the layer is
    layer.lora_B.data[...] = 1.0
    layer(tt.randn(5, 4, device=device)).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None


def test_starts_equal_to_base_model(device):
    model = tiny_gpt(device)
    idx = np.random.default_rng(0).integers(0, 40, (2, 10))
    before = model(idx).numpy()
    apply_lora(model, rank=4, alpha=8.0)
    np.testing.assert_array_equal(model(idx).numpy(), before)   # B = 0: the update is exactly zero


def test_only_adapters_train_and_base_is_unchanged(device):
    model = tiny_gpt(device)
    base = model.state_dict()
    apply_lora(model, rank=2, alpha=4.0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith((".lora_A", ".lora_B")) for n in trainable)
    assert len(trainable) == 2 * 4 * model.config.n_layer        # four projections per block
    opt = optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = rng.integers(0, 40, (4, 9))
        _, loss = model(idx[:, :-1], targets=idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    for name, value in base.items():
        np.testing.assert_array_equal(as_numpy(after[name]), as_numpy(value), err_msg=name)
    assert any(np.abs(as_numpy(v)).max() > 0 for k, v in lora_state_dict(model).items() if k.endswith("lora_B"))


def test_state_dict_holds_adapters_only():
    model = apply_lora(tiny_gpt(), rank=3, alpha=3.0)
    state = lora_state_dict(model)
    assert set(state) == {f"h.{i}.{part}.lora_{m}" for i in range(2)
                          for part in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj") for m in "AB"}
    assert state["h.0.attn.c_attn.lora_A"].shape == (3, 16)
    assert state["h.0.attn.c_attn.lora_B"].shape == (48, 3)


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_merged_model_equals_adapter_model(mlp, device):
    model = apply_lora(tiny_gpt(device, mlp=mlp), rank=2, alpha=5.0)
    rng = np.random.default_rng(3)
    for p in model.parameters():
        if p.requires_grad:   # stand in for training: nonzero adapters everywhere
            p.data[...] = rng.standard_normal(p.shape) * 0.1
    idx = rng.integers(0, 40, (2, 12))
    with_adapters = model(idx).numpy()
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(p.device == device for p in model.parameters())
    assert set(model.state_dict()) == set(tiny_gpt(mlp=mlp).state_dict())   # a plain GPT again
    np.testing.assert_allclose(model(idx).numpy(), with_adapters, rtol=1e-5, atol=1e-5)


def test_rank_must_be_positive():
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(3, 3), rank=0, alpha=1.0)
