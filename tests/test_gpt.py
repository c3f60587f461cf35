"""The GPT model: gradients, causality, KV-cache generation, sampling, GPT-2 import."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from conftest import as_numpy

import tinytensor as tt
from gpt import GPT, GPTConfig, sample_next
from gpt.rope import Rotary, rope_tables
from tinytensor import optim

TINY = dict(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)


def tiny_model(seed: int = 0, dtype=np.float64, **options) -> GPT:
    tt.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **options}))
    if dtype != np.float32:
        model.to(dtype=dtype)
    # GPT-2's init (std 0.02) makes every gradient tiny; larger weights give finite differences something to see
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data[...] = rng.normal(0, 0.5, p.shape) + (1.0 if p.ndim == 1 and not _is_bias(p, model) else 0.0)
    return model


def _is_bias(p, model) -> bool:
    return any(p is q for name, q in model.named_parameters() if name.endswith("bias"))


def ids(shape, vocab=11, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, shape)


OPTIONS = [
    dict(zip(("pos", "mlp", "norm", "bias"), combo))
    for combo in itertools.product(("learned", "rope"), ("gelu", "swiglu"), ("layernorm", "rmsnorm"), (True, False))
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_whole_model_gradcheck(options, device):
    model = tiny_model(**options).to(device)
    x, y = ids((2, 6), seed=1), ids((2, 6), seed=2)
    # every parameter tensor, on a sample of its coordinates (all of the small ones)
    for i, (name, p) in enumerate(model.named_parameters()):
        assert p.dtype == np.float64
        tt.gradcheck(lambda p: model(x, targets=y)[1], [p], max_elements=12, atol=1e-6, rtol=1e-4, seed=i)


def test_rotary_gradcheck_and_inverse():
    cos, sin = rope_tables(4, 5, dtype=np.float64)
    x = tt.tensor(np.random.default_rng(0).normal(size=(2, 3, 5, 4)), requires_grad=True, dtype=np.float64)
    assert tt.gradcheck(lambda x: Rotary.apply(x, cos=cos, sin=sin), [x])
    # rotating by the opposite angle undoes it, and norms are kept pair by pair
    y = Rotary.apply(x, cos=cos, sin=sin)
    back = Rotary.apply(y, cos=cos, sin=-sin)
    np.testing.assert_allclose(back.data, x.data, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(y.data, axis=-1), np.linalg.norm(x.data, axis=-1))


@pytest.mark.parametrize("options", [{}, dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False)])
def test_causality(options, device):
    model = tiny_model(**options).to(device)
    x = ids((1, 6), seed=3)
    base = model(x).numpy()
    for t in range(6):
        changed = x.copy()
        changed[0, t] = (changed[0, t] + 1) % 11
        out = model(changed).numpy()
        np.testing.assert_array_equal(out[0, :t], base[0, :t])
        assert not np.allclose(out[0, t], base[0, t])


@pytest.mark.parametrize("options", [{}, dict(pos="rope", mlp="swiglu", norm="rmsnorm")])
def test_kv_cache_generation_equals_full_recompute(options, device):
    model = tiny_model(dtype=np.float32, **{**options, "block_size": 16}).to(device)
    prompt = ids((2, 3), seed=4)
    cached = model.generate(prompt, 12, temperature=0)
    full = model.generate(prompt, 12, temperature=0, use_cache=False)
    np.testing.assert_array_equal(cached, full)
    # logits too: a cached step against the full forward over the same prefix
    caches = model.new_caches(2)
    with tt.no_grad():
        model(cached[:, :8], caches=caches)
        step = as_numpy(model(cached[:, 8:9], caches=caches).data[:, -1])
        np.testing.assert_allclose(step, as_numpy(model(cached[:, :9]).data[:, -1]), atol=1e-5)


def test_generation_past_block_size_crops_the_context(device):
    model = tiny_model(dtype=np.float32).to(device)
    prompt = ids((1, 4), seed=5)
    out = model.generate(prompt, 10, temperature=0)
    assert out.shape == (1, 14)
    np.testing.assert_array_equal(out, model.generate(prompt, 10, temperature=0, use_cache=False))


def test_generate_stops_at_eos(device):
    model = tiny_model(dtype=np.float32).to(device)
    prompt = ids((1, 2), seed=6)
    greedy = model.generate(prompt, 5, temperature=0)
    eos = int(greedy[0, 2])
    out = model.generate(prompt, 5, temperature=0, eos_id=eos)
    assert out.shape == (1, 3) and out[0, -1] == eos


def test_top_k_one_is_greedy_and_seed_reproduces(device):
    model = tiny_model(dtype=np.float32, block_size=16).to(device)
    prompt = ids((2, 3), seed=7)
    np.testing.assert_array_equal(model.generate(prompt, 8, top_k=1, seed=1), model.generate(prompt, 8, temperature=0))
    a = model.generate(prompt, 8, temperature=1.0, seed=123)
    b = model.generate(prompt, 8, temperature=1.0, seed=123)
    np.testing.assert_array_equal(a, b)


def test_top_p_never_samples_outside_the_nucleus():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.1, 0.06, 0.04]]))
    seen = {int(sample_next(logits, 1.0, None, 0.75, rng)[0]) for _ in range(500)}
    assert seen == {0, 1}  # 0.5 < 0.75, so the nucleus is {0, 1}
    seen_k = {int(sample_next(logits, 1.0, 3, None, rng)[0]) for _ in range(500)}
    assert seen_k == {0, 1, 2}


def test_sampling_follows_the_distribution():
    rng = np.random.default_rng(1)
    probs = np.array([0.6, 0.3, 0.1])
    draws = np.array([sample_next(np.log(probs)[None], 1.0, rng=rng)[0] for _ in range(4000)])
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 4000, probs, atol=0.03)


def test_hf_layout_round_trip(tmp_path, device):
    model = tiny_model(dtype=np.float32).to(device)
    model.save_pretrained(tmp_path)
    loaded = GPT.from_pretrained(tmp_path).to(device)
    x = ids((2, 5), seed=8)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_loads_hf_keys_without_prefix_with_buffers_and_lm_head(tmp_path):
    from safetensors.numpy import load_file, save_file

    model = tiny_model(dtype=np.float32)
    model.save_pretrained(tmp_path)
    raw = load_file(str(tmp_path / "model.safetensors"))
    plain = {k.removeprefix("transformer."): v for k, v in raw.items()}
    plain["lm_head.weight"] = plain["wte.weight"]
    for i in range(TINY["n_layer"]):
        plain[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 6, 6), dtype=np.float32))
        plain[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    save_file(plain, str(tmp_path / "model.safetensors"))
    x = ids((1, 6), seed=9)
    np.testing.assert_array_equal(GPT.from_pretrained(tmp_path)(x).data, model(x).data)


def test_conv1d_weights_are_transposed(tmp_path):
    from safetensors.numpy import load_file

    model = tiny_model(dtype=np.float32)
    model.save_pretrained(tmp_path)
    raw = load_file(str(tmp_path / "model.safetensors"))
    C = TINY["n_embd"]
    assert raw["transformer.h.0.attn.c_attn.weight"].shape == (C, 3 * C)  # HF Conv1D: (in, out)
    assert raw["transformer.h.0.mlp.c_fc.weight"].shape == (C, 4 * C)


def test_pretrained_errors_name_the_problem(tmp_path):
    from safetensors.numpy import load_file, save_file

    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT.from_pretrained(tmp_path)
    model = tiny_model(dtype=np.float32)
    model.save_pretrained(tmp_path)
    raw = load_file(str(tmp_path / "model.safetensors"))
    broken = dict(raw)
    del broken["transformer.ln_f.weight"]
    broken["transformer.h.0.extra"] = np.zeros(3, dtype=np.float32)
    broken["transformer.wpe.weight"] = np.zeros((7, 8), dtype=np.float32)
    save_file(broken, str(tmp_path / "model.safetensors"))
    with pytest.raises(Exception) as err:
        GPT.from_pretrained(tmp_path)
    msg = str(err.value)
    assert "ln_f.weight" in msg and "h.0.extra" in msg and "wpe.weight" in msg
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        GPT.from_pretrained(tmp_path)


def test_config_errors():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="n_layer must be a positive integer"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="unknown preset"):
        GPTConfig.preset("gpt5")
    with pytest.raises(ValueError, match="pos must be one of"):
        GPTConfig(pos="alibi")
    assert GPTConfig.preset("mini").n_embd == 384 and GPTConfig.preset("nano", vocab_size=65).vocab_size == 65


def test_input_errors():
    model = tiny_model(dtype=np.float32)
    with pytest.raises(ValueError, match="longer than block_size 6"):
        model(ids((1, 7)))
    with pytest.raises(ValueError, match="token id 11 is outside the vocabulary"):
        model(np.array([[1, 11]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(np.array([[1, -1]]))


def test_parameter_count_and_flops():
    cfg = GPTConfig.preset("gpt2")
    model_params = (cfg.vocab_size * cfg.n_embd + cfg.block_size * cfg.n_embd
                    + cfg.n_layer * (12 * cfg.n_embd ** 2 + 13 * cfg.n_embd) + 2 * cfg.n_embd)
    assert model_params == 124_439_808  # GPT-2 small, the figure everyone quotes
    small = GPT(GPTConfig(**TINY))
    C, L = TINY["n_embd"], TINY["n_layer"]
    expected = TINY["vocab_size"] * C + TINY["block_size"] * C + L * (12 * C * C + 13 * C) + 2 * C
    assert small.num_parameters() == expected
    assert small.flops_per_token() == 6 * (expected - TINY["block_size"] * C) + 12 * L * C * TINY["block_size"]


def test_gpt2_init_scales_residual_projections():
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=8, n_head=2, n_embd=64))
    assert np.std(model.h[0].mlp.c_fc.weight.data) == pytest.approx(0.02, rel=0.1)
    assert np.std(model.h[0].mlp.c_proj.weight.data) == pytest.approx(0.02 / 4, rel=0.1)
    np.testing.assert_array_equal(model.h[0].ln_1.weight.data, 1.0)
    np.testing.assert_array_equal(model.h[0].attn.c_attn.bias.data, 0.0)


def test_two_layer_model_overfits_a_sequence(device):
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=64, n_layer=2, n_head=2, n_embd=32)).to(device)
    seq = np.random.default_rng(0).integers(0, 32, 65)
    x, y = seq[None, :-1], seq[None, 1:]
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(300):
        _, loss = model(x, targets=y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_sample_cli_from_a_folder(tmp_path):
    import subprocess
    import sys

    from bpe import Tokenizer

    tok = Tokenizer.train("hello world, hello there. " * 20, vocab_size=270, special_tokens=["<|endoftext|>"])
    tok.save(tmp_path / "tokenizer.json")
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    tt.save(model.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    out = subprocess.run([sys.executable, "-m", "gpt", "sample", "--checkpoint", str(tmp_path), "--prompt", "hello",
                          "--max-new-tokens", "5", "--seed", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("hello")


def test_sample_cli_prints_on_after_a_byte_that_is_not_utf8(tmp_path, monkeypatch, capsys):
    from bpe import Tokenizer
    from gpt.train.cli import main

    tok = Tokenizer(special_tokens=["<|endoftext|>"])   # bytes only: id b is the byte b
    tok.save(tmp_path / "tokenizer.json")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    tt.save(model.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    printed = []

    def stream(self, *args, **kwargs):
        # a lone continuation byte, then "é" in two tokens, then "o": all shown before the next token
        for t in [0x80, 0xC3, 0xA9, ord("o")]:
            yield np.array([t])
        printed.append(capsys.readouterr().out)
        yield np.array([ord("k")])

    monkeypatch.setattr(GPT, "stream", stream)
    main(["sample", "--checkpoint", str(tmp_path), "--prompt", "x"])
    assert printed == ["x\ufffdéo"] and capsys.readouterr().out == "k\n"
