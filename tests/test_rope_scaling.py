"""Llama 3's RoPE scaling (gpt/rope.py): the frequencies against a hand computation, Hugging
Face configs and GGUF files that carry it, and the refusal of every other scaling."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import tinytensor as tt
from gpt import GPT, GPTConfig
from gpt.rope import Rotary, rope_tables

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}


def test_scaled_frequencies_by_hand():
    """D = 8, base 1e6: theta = 1, 1e6^-1/4, 1e-3, 1e6^-3/4, wavelengths 2 pi / theta = 6.3, 199, 6283, 198692.
    Against 8192 / 4 = 2048 and 8192 / 1: the first two are high frequencies (kept), the last a low one
    (divided by 8), and 1e-3 lies between: blended with s = (8192 / 6283.19 - 1) / (4 - 1) = 0.10127,
    (1 - s) 1e-3 / 8 + s 1e-3 = 2.1361e-4."""
    s = (8192 / (2 * math.pi * 1000) - 1) / 3
    assert abs(s - 0.10127) < 1e-5
    expected = np.array([1.0, 1e6 ** -0.25, (1 - s) * 1e-3 / 8 + s * 1e-3, 1e6 ** -0.75 / 8])
    assert abs(expected[2] - 2.1361e-4) < 1e-8
    T = 50
    cos, sin = rope_tables(8, T, base=1e6, dtype=np.float64, scaling=LLAMA3)
    angles = np.arange(T)[:, None] * expected
    np.testing.assert_allclose(cos, np.cos(angles), atol=1e-12)
    np.testing.assert_allclose(sin, np.sin(angles), atol=1e-12)
    plain, _ = rope_tables(8, T, base=1e6, dtype=np.float64)
    assert np.array_equal(plain[:, :2], cos[:, :2]) and not np.allclose(plain[:, 2:], cos[:, 2:])


def test_backward_of_the_scaled_rotation_is_the_inverse_rotation():
    cos, sin = rope_tables(8, 5, base=1e6, dtype=np.float64, scaling=LLAMA3)
    x = tt.tensor(np.random.default_rng(0).standard_normal((1, 2, 5, 8)), requires_grad=True, dtype="float64")
    assert tt.gradcheck(lambda t: Rotary.apply(t, cos=cos, sin=sin), [x])


def _hf_folder(tmp_path, rope_scaling):
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=1, n_head=2, n_embd=16, pos="rope", mlp="swiglu",
                          norm="rmsnorm", bias=False, rope_base=1e6))
    model.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw.pop("rope_parameters")
    raw["rope_scaling"] = rope_scaling
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return model


def test_hugging_face_llama3_scaling_loads_and_exports(tmp_path):
    model = _hf_folder(tmp_path / "a", {**LLAMA3, "factor": 32.0})
    loaded = GPT.from_pretrained(tmp_path / "a")
    assert loaded.config.rope_scaling == {**LLAMA3, "factor": 32.0}
    ids = np.array([[1, 5, 9, 2, 30, 7]])
    assert not np.allclose(loaded.rope_cos.numpy(), model.rope_cos.numpy())   # the scaling turns pairs slower
    loaded.save_pretrained(tmp_path / "b")
    again = GPT.from_pretrained(tmp_path / "b")
    assert again.config == loaded.config
    np.testing.assert_array_equal(again(ids).numpy(), loaded(ids).numpy())


@pytest.mark.parametrize("kind", ["linear", "dynamic", "yarn", "longrope"])
def test_other_scalings_are_refused(tmp_path, kind):
    _hf_folder(tmp_path, {"rope_type": kind, "factor": 2.0})
    with pytest.raises(ValueError, match=f"rope_scaling of type '{kind}' is not supported"):
        GPT.from_pretrained(tmp_path)


def test_config_checks_its_scaling():
    with pytest.raises(ValueError, match="rope_scaling"):
        GPTConfig(rope_scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(ValueError, match="high_freq_factor"):
        GPTConfig(rope_scaling={**LLAMA3, "high_freq_factor": 0.5})


def _converter_divisors(head_dim: int, base: float, factor: float) -> np.ndarray:
    """convert_hf_to_gguf.py's rope_freqs for Llama 3 (low 1, high 4, original 8192)."""
    out = []
    for freq in 1.0 / base ** (np.arange(0, head_dim, 2) / head_dim):
        wavelen = 2 * math.pi / freq
        if wavelen < 8192 / 4:
            out.append(1.0)
        elif wavelen > 8192:
            out.append(factor)
        else:
            smooth = (8192 / wavelen - 1) / 3
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def test_gguf_rope_freqs_become_llama3_scaling(tmp_path):
    pytest.importorskip("gguf")
    from test_gguf import gguf_tensors, logits, tiny, write_gguf

    model = tiny(rope_base=1e6, rope_scaling=LLAMA3, n_embd=64, n_head=4, n_kv_head=2)   # head size 16
    tensors = gguf_tensors(model, "llama", permute=True)
    write_gguf(tmp_path / "m.gguf", model.config, tensors | {"rope_freqs.weight": _converter_divisors(16, 1e6, 8.0)})
    loaded = GPT.from_pretrained(tmp_path / "m.gguf")
    assert loaded.config.rope_scaling == LLAMA3
    np.testing.assert_allclose(logits(loaded), logits(model), atol=1e-5)
    wrong = _converter_divisors(16, 1e6, 8.0) * np.linspace(1, 2, 8, dtype=np.float32)
    write_gguf(tmp_path / "w.gguf", model.config, tensors | {"rope_freqs.weight": wrong})
    with pytest.raises(ValueError, match="rope_freqs.weight is not Llama 3's RoPE scaling"):
        GPT.from_pretrained(tmp_path / "w.gguf")
