"""Modules: registration, names, state dicts, modes, devices, layer init, a tiny training run."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import as_numpy

import tinytensor as tt
from tinytensor import functional as F
from tinytensor import nn, optim


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ln = nn.LayerNorm(dim, bias=False)
        self.attn = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.Dropout(0.5), nn.Linear(2 * dim, dim, bias=False))

    def forward(self, x):
        x = x + self.attn(self.ln(x))
        return x + self.mlp(x)


class TinyModel(nn.Module):
    def __init__(self, vocab: int = 7, dim: int = 4, n_blocks: int = 2, device: str = "cpu"):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim, device=device)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(n_blocks))
        self.ln_f = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.wte.weight  # weight tying, as GPT-2 does

    def forward(self, ids):
        x = self.wte(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def block_names(i: int) -> list[str]:
    return [f"blocks.{i}.{n}" for n in (
        "ln.weight", "attn.weight", "attn.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight")]


# ---- registration and names --------------------------------------------------------
def test_named_parameters_are_dotted_paths_through_lists_and_sequentials():
    model = TinyModel()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["wte.weight", *block_names(0), *block_names(1), "ln_f.weight"]
    # the tied head weight is the embedding's: listed and counted once
    assert model.head.weight is model.wte.weight
    assert len(model.parameters()) == len(names)
    assert model.num_parameters() == sum(p.size for p in model.parameters()) == 7 * 4 + 2 * (4 + 20 + 40 + 32) + 4


def test_named_modules_and_rebinding_unregisters():
    block = Block(3)
    assert [n for n, _ in block.named_modules()] == ["", "ln", "attn", "mlp", "mlp.0", "mlp.1", "mlp.2"]
    block.attn.bias = None  # a plain attribute now, no longer a parameter
    assert "attn.bias" not in dict(block.named_parameters())
    assert block.attn.bias is None
    block.attn.bias = nn.Parameter(np.zeros(3))
    assert "attn.bias" in dict(block.named_parameters())
    del block.attn.bias
    assert "attn.bias" not in dict(block.named_parameters())


def test_assigning_before_init_is_a_clear_error():
    class Forgetful(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Forgetful()


def test_containers_index_slice_and_chain(device):
    layers = [nn.Linear(2, 2, device=device) for _ in range(3)]
    ml = nn.ModuleList(layers)
    assert len(ml) == 3 and ml[-1] is layers[2] and list(ml) == layers
    assert isinstance(ml[1:], nn.ModuleList) and list(ml[1:]) == layers[1:]
    with pytest.raises(IndexError, match="out of range"):
        ml[3]
    with pytest.raises(TypeError, match="Modules"):
        ml.append(np.zeros(2))

    seq = nn.Sequential(*layers)
    x = tt.randn(5, 2, device=device)
    expected = layers[2](layers[1](layers[0](x)))
    assert seq(x).device == device
    np.testing.assert_array_equal(seq(x).numpy(), expected.numpy())
    head = seq[:2]
    assert isinstance(head, nn.Sequential)
    np.testing.assert_array_equal(head(x).numpy(), layers[1](layers[0](x)).numpy())


# ---- init ---------------------------------------------------------------------------
def test_layer_init_follows_pytorch_defaults(device):
    tt.manual_seed(0)
    lin = nn.Linear(64, 300, device=device)
    bound = 1 / np.sqrt(64)
    w = lin.weight.numpy()
    assert w.shape == (300, 64) and lin.weight.dtype == np.float32 and lin.weight.device == device
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.mean()) < 0.01 and abs(w.std() - bound / np.sqrt(3)) < 0.01  # U(-b, b) has std b/sqrt(3)
    assert np.abs(lin.bias.numpy()).max() <= bound

    emb = nn.Embedding(300, 64, dtype=np.float64, device=device).weight.numpy()
    assert emb.dtype == np.float64
    assert abs(emb.mean()) < 0.02 and abs(emb.std() - 1) < 0.02

    ln, rms = nn.LayerNorm(5, device=device), nn.RMSNorm(5, device=device)
    np.testing.assert_array_equal(ln.weight.numpy(), np.ones(5))
    np.testing.assert_array_equal(ln.bias.numpy(), np.zeros(5))
    np.testing.assert_array_equal(rms.weight.numpy(), np.ones(5))
    assert nn.LayerNorm(5, bias=False).bias is None
    assert all(p.requires_grad and isinstance(p, nn.Parameter) for p in lin.parameters())


def test_same_seed_same_weights_on_every_device(device):
    tt.manual_seed(3)
    a = TinyModel()
    tt.manual_seed(3)
    b = TinyModel(device=device)
    b.to(device)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy(), err_msg=name)


# ---- modes and grads ------------------------------------------------------------------
def test_train_and_eval_reach_every_descendant():
    model = TinyModel()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_evaluating_is_eval_inside_and_the_mode_before_after():
    model = TinyModel()
    with pytest.raises(KeyError):
        with model.evaluating() as inside:
            assert inside is model and not any(m.training for m in model.modules())
            raise KeyError("an error inside still restores the mode")
    assert all(m.training for m in model.modules())
    model.eval()
    with model.evaluating():
        pass
    assert not any(m.training for m in model.modules())


def test_dropout_is_identity_in_eval_and_drops_in_training(device):
    drop = nn.Dropout(0.5)
    x = tt.ones(1000, device=device)
    y = drop(x).numpy()
    assert 300 < (y == 0).sum() < 700 and set(np.unique(y)) == {0.0, 2.0}
    np.testing.assert_array_equal(drop.eval()(x).numpy(), x.numpy())
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout(1.5)


def test_zero_grad_sets_grads_to_none(device):
    model = TinyModel().to(device)
    F.cross_entropy(model(np.array([[1, 2, 3]])), np.array([[2, 3, 4]])).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


# ---- state dicts ------------------------------------------------------------------------
def test_state_dict_round_trip_gives_identical_outputs(device):
    tt.manual_seed(0)
    a = TinyModel().to(device).eval()
    tt.manual_seed(1)
    b = TinyModel().to(device).eval()
    ids = np.array([[0, 3, 6, 1]])
    assert not np.allclose(a(ids).numpy(), b(ids).numpy())
    weights_before = [id(p) for p in b.parameters()]
    state = a.state_dict()
    assert list(state) == [n for n, _ in a.named_parameters()]
    assert all(tt.get_array_module(v) is tt.get_array_module(a.wte.weight.data) for v in state.values())
    b.load_state_dict(state)
    assert [id(p) for p in b.parameters()] == weights_before  # copied in place
    np.testing.assert_array_equal(a(ids).numpy(), b(ids).numpy())
    # a state dict is a snapshot, not a view of the live weights
    a.wte.weight.data += 1
    assert not np.array_equal(as_numpy(state["wte.weight"]), a.wte.weight.numpy())


def test_load_state_dict_names_every_problem_at_once_and_changes_nothing(device):
    model = TinyModel().to(device)
    before = model.state_dict()
    state = dict(before)
    del state["ln_f.weight"], state["blocks.1.attn.bias"]
    state["blocks.0.attn.weight"] = np.zeros((4, 5), np.float32)
    state["lm_head.weight"] = np.zeros(3)
    state["wte.weight"] = state["wte.weight"] + 1
    with pytest.raises(ValueError) as err:
        model.load_state_dict(state)
    msg = str(err.value)
    for key in ("ln_f.weight", "blocks.1.attn.bias", "lm_head.weight", "blocks.0.attn.weight"):
        assert key in msg
    assert "missing" in msg and "unexpected" in msg and "(4, 5)" in msg and "(4, 4)" in msg
    for name, arr in model.state_dict().items():
        np.testing.assert_array_equal(as_numpy(arr), as_numpy(before[name]))


def test_load_state_dict_non_strict_reports_what_it_skipped(device):
    model = nn.Linear(2, 3, device=device)
    result = model.load_state_dict({"weight": np.ones((3, 2)), "extra": np.ones(1)}, strict=False)
    assert result.missing == ["bias"] and result.unexpected == ["extra"]
    np.testing.assert_array_equal(model.weight.numpy(), np.ones((3, 2)))
    with pytest.raises(ValueError, match="wrong shapes"):
        model.load_state_dict({"weight": np.ones((2, 3))}, strict=False)


def test_load_state_dict_casts_dtype_and_moves_device(device):
    model = nn.Linear(2, 3, device=device)
    state = {"weight": tt.tensor(np.arange(6.0).reshape(3, 2), dtype=np.float64), "bias": np.full(3, 0.5)}
    model.load_state_dict(state)
    assert model.weight.dtype == np.float32 and model.weight.device == device
    np.testing.assert_array_equal(model.weight.numpy(), np.arange(6.0).reshape(3, 2))
    np.testing.assert_array_equal(model.bias.numpy(), np.full(3, 0.5))


def test_buffers_persistent_or_not(device):
    class WithBuffers(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("scale", np.full(2, 3.0, np.float32))
            self.register_buffer("mask", np.tril(np.ones((2, 2), bool)), persistent=False)

    m = WithBuffers().to(device)
    assert m.scale.device == m.mask.device == device
    assert sorted(m.state_dict()) == ["lin.bias", "lin.weight", "scale"]
    assert [n for n, _ in m.named_buffers()] == ["scale", "mask"]
    assert m.scale.requires_grad is False
    m.scale = np.zeros(2, np.float32)  # re-assigning keeps it a buffer, on the buffer's device
    assert isinstance(m.scale, tt.Tensor) and "scale" in m.state_dict() and m.scale.device == device
    state = m.state_dict()
    state["scale"] = np.full(2, 7.0)
    m.load_state_dict(state)
    np.testing.assert_array_equal(m.scale.numpy(), [7.0, 7.0])
    assert m.scale.device == device
    m.to(dtype=np.float64)
    assert m.scale.dtype == np.float64 and m.mask.dtype == bool  # only floats are cast
    m.mask = None  # None unregisters, as for parameters
    assert [n for n, _ in m.named_buffers()] == ["scale"] and m.mask is None


def test_to_keeps_parameter_objects_and_moves_grads(device):
    model = TinyModel()
    F.cross_entropy(model(np.array([[1, 2]])), np.array([[2, 3]])).backward()
    params = model.parameters()
    assert model.to(device, dtype=np.float64) is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    for p in params:
        assert p.device == device and p.dtype == np.float64
        assert p.grad.dtype == np.float64 and tt.get_array_module(p.grad) is tt.get_array_module(p.data)
    assert model(np.array([[1, 2]])).device == device


# ---- end to end ----------------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int):
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.ln = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.fc2(F.gelu(self.ln(self.fc1(x))))


def test_tiny_classifier_trains_with_adamw(device):
    tt.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 2))
    labels = (x[:, 0] * x[:, 1] > 0).astype(np.int64)  # XOR-like quadrants: needs the hidden layer
    model = MLP(2, 32, 2).to(device)
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, 0.01), lr=0.03)
    xs, ys = tt.tensor(x, device=device), tt.tensor(labels, device=device)
    first = F.cross_entropy(model(xs), ys).item()
    for _ in range(150):
        opt.zero_grad()
        loss = F.cross_entropy(model(xs), ys)
        loss.backward()
        opt.step()
    last = F.cross_entropy(model(xs), ys).item()
    assert first > 0.6 and last < 0.1 * first
