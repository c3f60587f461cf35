"""Llama-family models: the new GPTConfig options (grouped-query attention, head_dim, QK-norm,
q/k/v biases, an untied head, intermediate_size), Hugging Face Llama / Qwen2 / Qwen3 folders
in and out, export, the llama-nano preset, LoRA on Llama blocks.

The oracle for the Hugging Face layout is `numpy_forward` below: the HF models' computation
written in plain NumPy from the HF-named weights of a folder that each test writes itself."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file
from test_gpt import ids, tiny_model

import tinytensor as tt
from bpe import Tokenizer
from gpt import GPT, GPTConfig
from gpt.lora import LoRALinear, apply_lora
from gpt.pretrained import read_pretrained

LLAMA = dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False)
needs_hf_tokenizer = pytest.mark.skipif(not hasattr(Tokenizer, "from_hf") or not hasattr(Tokenizer, "save_hf"),
                                        reason="bpe's Tokenizer has no from_hf/save_hf yet (another branch)")

# every new option, on a 2-layer model with 4 query heads (Llama's layout unless said otherwise)
NEW_OPTIONS = {
    "gqa": dict(**LLAMA, n_head=4, n_kv_head=2),
    "mqa-untied": dict(**LLAMA, n_head=4, n_kv_head=1, tie_embeddings=False),
    "qk-norm-head-dim": dict(**LLAMA, n_head=4, n_kv_head=2, qk_norm=True, head_dim=6),
    "qkv-bias-intermediate": dict(**LLAMA, n_head=4, n_kv_head=2, qkv_bias=True, intermediate_size=10),
    "gpt2-with-gqa-untied": dict(n_head=4, n_kv_head=2, tie_embeddings=False),
}


@pytest.mark.parametrize("options", NEW_OPTIONS.values(), ids=NEW_OPTIONS)
def test_whole_model_gradcheck_float64(options, device):
    model = tiny_model(**options).to(device)
    x, y = ids((2, 6), seed=1), ids((2, 6), seed=2)
    names = [name for name, _ in model.named_parameters()]
    if options.get("tie_embeddings") is False:
        assert "lm_head.weight" in names
    if options.get("qk_norm"):
        assert "h.0.attn.q_norm.weight" in names and "h.0.attn.k_norm.weight" in names
    if options.get("qkv_bias"):
        assert "h.0.attn.c_attn.bias" in names and "h.0.attn.c_proj.bias" not in names
    for i, (name, p) in enumerate(model.named_parameters()):
        tt.gradcheck(lambda p: model(x, targets=y)[1], [p], max_elements=12, atol=1e-6, rtol=1e-4, seed=i)


def test_parameter_shapes_follow_the_options():
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=6, n_kv_head=2, head_dim=4, n_embd=12,
                    intermediate_size=7, qk_norm=True, tie_embeddings=False, **LLAMA)
    shapes = {name: p.shape for name, p in GPT(cfg).named_parameters()}
    assert shapes["h.0.attn.c_attn.weight"] == ((6 + 2 * 2) * 4, 12)
    assert shapes["h.0.attn.c_proj.weight"] == (12, 24)
    assert shapes["h.0.attn.q_norm.weight"] == (4,)
    assert shapes["h.0.mlp.c_gate.weight"] == (7, 12) and shapes["h.0.mlp.c_proj.weight"] == (12, 7)
    assert shapes["lm_head.weight"] == (11, 12)


def test_kv_cache_holds_the_kv_heads_and_generation_matches_recompute(device):
    model = tiny_model(dtype=np.float32, **LLAMA, n_head=4, n_kv_head=2, block_size=16, qk_norm=True).to(device)
    caches = model.new_caches(2)
    with tt.no_grad():
        model(ids((2, 5), seed=3), caches=caches)
    assert caches[0].k.shape[:2] == (2, 2) and caches[0].length == 5
    prompt = ids((2, 3), seed=4)
    cached = model.generate(prompt, 12, temperature=0)
    np.testing.assert_array_equal(cached, model.generate(prompt, 12, temperature=0, use_cache=False))


def test_kv_cache_grows_by_doubling_up_to_block_size():
    model = tiny_model(dtype=np.float32, block_size=40)
    cache = model.new_caches(1)[0]
    seen = []
    for t in range(40):
        k = tt.tensor(np.full((1, 2, 1, 4), float(t), dtype=np.float32))
        cache.append(k, k)
        seen.append(cache.k.shape[2])
    assert sorted(set(seen)) == [1, 2, 4, 8, 16, 32, 40]
    np.testing.assert_array_equal(cache.k[0, 0, :, 0], np.arange(40))


def test_old_configs_load_with_the_defaults():
    saved = dict(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8, dropout=0.0, bias=True, pos="learned",
                 mlp="gelu", norm="layernorm", norm_eps=1e-5, rope_base=10000.0)   # written before the new fields
    cfg = GPTConfig.from_dict(saved)
    assert (cfg.n_kv_head, cfg.head_dim, cfg.qk_norm, cfg.qkv_bias, cfg.tie_embeddings, cfg.intermediate_size) == \
        (None, None, False, False, True, None)
    assert cfg.kv_heads == 2 and cfg.head_size == 4 and cfg.mlp_hidden == 32
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg


def test_config_errors():
    with pytest.raises(ValueError, match="n_head \\(4\\) must be a multiple of n_kv_head \\(3\\)"):
        GPTConfig(n_head=4, n_kv_head=3, n_embd=16)
    with pytest.raises(ValueError, match="n_kv_head must be a positive integer"):
        GPTConfig(n_kv_head=0)
    with pytest.raises(ValueError, match="even head size, got 5"):
        GPTConfig(pos="rope", head_dim=5)
    GPTConfig(n_embd=10, n_head=3, head_dim=4)   # head_dim set: n_embd need not divide


# ---- the llama-nano preset ------------------------------------------------------------
def test_llama_nano_has_nanos_parameter_count_without_biases():
    nano = GPT(GPTConfig.preset("nano", vocab_size=257, bias=False)).num_parameters()
    llama = GPT(GPTConfig.preset("llama-nano", vocab_size=257))
    assert llama.config.kv_heads == 2 and not llama.config.tie_embeddings and not llama.config.bias
    assert abs(llama.num_parameters() - nano) / nano < 0.001


def test_train_py_llama_nano_takes_the_presets_bias(tmp_path, corpus):
    from conftest import train_run

    train_run(corpus, tmp_path / "llama", "--preset", "llama-nano", "--n-head", "4", "--max-iters", "2")
    config = json.loads(next((tmp_path / "llama" / "ckpt").glob("step_*/config.json")).read_text())["model"]
    assert config["n_kv_head"] == 2 and config["bias"] is False and config["tie_embeddings"] is False
    train_run(corpus, tmp_path / "nano", "--max-iters", "1")
    assert json.loads(next((tmp_path / "nano" / "ckpt").glob("step_*/config.json")).read_text())["model"]["bias"]


# ---- Hugging Face folders: the NumPy oracle -----------------------------------------------
def numpy_forward(w: dict, hf: dict, x: np.ndarray) -> np.ndarray:
    """Logits (B, T, V) of a Llama / Qwen2 / Qwen3 with HF-named weights `w` and config.json `hf`,
    as transformers computes them: RMS norms, rotate_half RoPE, each kv head repeated for its
    query heads, causal softmax attention, SwiGLU with silu on gate_proj, and lm_head or the
    tied embedding."""
    H, Hkv, C = hf["num_attention_heads"], hf.get("num_key_value_heads", hf["num_attention_heads"]), hf["hidden_size"]
    D = hf.get("head_dim") or C // H
    eps = hf["rms_norm_eps"]
    theta = hf.get("rope_parameters", {}).get("rope_theta", hf.get("rope_theta", 10000.0))
    B, T = x.shape
    angles = np.arange(T)[:, None] * theta ** (-np.arange(0, D, 2) / D)[None]   # (T, D/2)
    cos, sin = np.cos(np.concatenate([angles] * 2, -1)), np.sin(np.concatenate([angles] * 2, -1))

    def rms(a, weight):
        return a / np.sqrt((a * a).mean(-1, keepdims=True) + eps) * weight

    def rotate(a):                                       # x * cos + rotate_half(x) * sin
        return a * cos + np.concatenate([-a[..., D // 2:], a[..., :D // 2]], -1) * sin

    def proj(a, name):
        return a @ w[name + ".weight"].T + w.get(name + ".bias", 0.0)

    h = w["model.embed_tokens.weight"][x]
    future = np.triu(np.ones((T, T), dtype=bool), 1)
    for i in range(hf["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms(h, w[p + "input_layernorm.weight"])
        q, k, v = (proj(a, p + f"self_attn.{n}_proj").reshape(B, T, -1, D).transpose(0, 2, 1, 3) for n in "qkv")
        if p + "self_attn.q_norm.weight" in w:
            q, k = rms(q, w[p + "self_attn.q_norm.weight"]), rms(k, w[p + "self_attn.k_norm.weight"])
        q, k = rotate(q), rotate(k)
        k, v = np.repeat(k, H // Hkv, axis=1), np.repeat(v, H // Hkv, axis=1)
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)
        s[..., future] = -np.inf
        probs = np.exp(s - s.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        o = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, H * D)
        h = h + proj(o, p + "self_attn.o_proj")
        a = rms(h, w[p + "post_attention_layernorm.weight"])
        gate = proj(a, p + "mlp.gate_proj")
        h = h + proj(gate / (1 + np.exp(-gate)) * proj(a, p + "mlp.up_proj"), p + "mlp.down_proj")
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return rms(h, w["model.norm.weight"]) @ head.T


def hf_config(kind: str, **fields) -> dict:
    """A small config.json of `kind`, in transformers' newer layout (theta in rope_parameters)."""
    raw = dict(model_type=kind, vocab_size=23, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32, rms_norm_eps=1e-6,
               rope_parameters={"rope_type": "default", "rope_theta": 500.0}, tie_word_embeddings=False,
               hidden_act="silu")
    if kind == "qwen3":
        raw["head_dim"] = 6   # Qwen3 sets one apart from hidden_size / heads
    return {**raw, **fields}


def hf_weights(hf: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights with the HF names and shapes that `hf` implies."""
    rng = np.random.default_rng(seed)
    C, H, V, M = hf["hidden_size"], hf["num_attention_heads"], hf["vocab_size"], hf["intermediate_size"]
    Hkv = hf.get("num_key_value_heads", H)
    D = hf.get("head_dim") or C // H
    shapes = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,)}
    for i in range(hf["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (C,), p + "post_attention_layernorm.weight": (C,),
                       p + "self_attn.q_proj.weight": (H * D, C), p + "self_attn.k_proj.weight": (Hkv * D, C),
                       p + "self_attn.v_proj.weight": (Hkv * D, C), p + "self_attn.o_proj.weight": (C, H * D),
                       p + "mlp.gate_proj.weight": (M, C), p + "mlp.up_proj.weight": (M, C),
                       p + "mlp.down_proj.weight": (C, M)})
        if hf["model_type"] == "qwen2":
            shapes.update({p + f"self_attn.{n}_proj.bias": (s,) for n, s in zip("qkv", (H * D, Hkv * D, Hkv * D))})
        if hf["model_type"] == "qwen3":
            shapes.update({p + "self_attn.q_norm.weight": (D,), p + "self_attn.k_norm.weight": (D,)})
    if not hf.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (V, C)
    return {name: (rng.normal(0, 0.4, s) + (name.endswith("norm.weight"))).astype(np.float32)
            for name, s in shapes.items()}


def write_hf_folder(folder, hf: dict, weights: dict, shards: int = 1) -> None:
    """config.json and model.safetensors, or `shards` files and their index."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf))
    if shards == 1:
        save_file(weights, str(folder / "model.safetensors"))
        return
    names = list(weights)
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s::shards]
        save_file({n: weights[n] for n in part}, str(folder / file))
        weight_map.update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def write_bf16_safetensors(path, weights: dict) -> None:
    """A safetensors file of bfloat16 tensors (the top 16 bits of each float32), written by hand:
    safetensors.numpy cannot, NumPy having no bfloat16."""
    header, blobs, offset = {}, [], 0
    for name, arr in weights.items():
        blob = (np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def loaded_float64(folder) -> GPT:
    model = GPT.from_pretrained(folder)
    return model.to(dtype=np.float64)       # the float32 weights exactly, computed in float64


@pytest.mark.parametrize("kind, fields", [
    ("llama", {}),
    ("llama", dict(num_key_value_heads=1, tie_word_embeddings=True)),
    ("llama", dict(num_key_value_heads=4, head_dim=4)),             # plain MHA, head_dim spelled out
    ("qwen2", dict(tie_word_embeddings=True)),
    ("qwen3", {}),
])
def test_hf_folder_logits_loss_and_mapping_match_the_numpy_oracle(tmp_path, kind, fields, device):
    hf = hf_config(kind, **fields)
    weights = hf_weights(hf)
    write_hf_folder(tmp_path, hf, weights)
    model = loaded_float64(tmp_path).to(device)
    x, y = ids((2, 9), vocab=23, seed=5), ids((2, 9), vocab=23, seed=6)
    expected = numpy_forward({k: v.astype(np.float64) for k, v in weights.items()}, hf, x)
    logits, loss = model(x, targets=y)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-9, atol=1e-10)
    logp = expected - np.log(np.exp(expected).sum(-1, keepdims=True))
    assert loss.item() == pytest.approx(-np.take_along_axis(logp, y[..., None], -1).mean(), rel=1e-10)


def test_sharded_and_bfloat16_folders(tmp_path):
    hf = hf_config("qwen3")
    weights = hf_weights(hf, seed=1)
    write_hf_folder(tmp_path / "sharded", hf, weights, shards=3)
    assert len(list((tmp_path / "sharded").glob("model-*-of-00003.safetensors"))) == 3
    x = ids((1, 7), vocab=23, seed=7)
    expected = numpy_forward({k: v.astype(np.float64) for k, v in weights.items()}, hf, x)
    np.testing.assert_allclose(loaded_float64(tmp_path / "sharded")(x).numpy(), expected, rtol=1e-9, atol=1e-10)
    # bfloat16 on disk: the weights rounded to bf16, then the same computation
    write_hf_folder(tmp_path / "bf16", {**hf, "torch_dtype": "bfloat16"}, {})
    write_bf16_safetensors(tmp_path / "bf16" / "model.safetensors", weights)
    rounded = {k: (v.view(np.uint32) & 0xFFFF0000).view(np.float32).astype(np.float64) for k, v in weights.items()}
    _, state = read_pretrained(tmp_path / "bf16")
    assert state["ln_f.weight"].dtype == np.float32
    np.testing.assert_allclose(loaded_float64(tmp_path / "bf16")(x).numpy(), numpy_forward(rounded, hf, x),
                               rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("fields, expected", [
    (dict(rope_theta=123.0, rope_parameters=None, head_dim=None), dict(rope_base=123.0, head_dim=None)),
    (dict(rope_theta=1.0, rope_parameters={"rope_type": "default", "rope_theta": 77.0}), dict(rope_base=77.0)),
    (dict(rope_parameters=None, rope_scaling={"type": "default"}), dict(rope_base=10000.0)),
    (dict(num_key_value_heads=None, head_dim=4), dict(n_kv_head=None, head_dim=None)),
    (dict(head_dim=8), dict(head_dim=8)),
    (dict(tie_word_embeddings=None), dict(tie_embeddings=False)),
    (dict(tie_word_embeddings=True), dict(tie_embeddings=True)),
])
def test_config_json_variants(tmp_path, fields, expected):
    hf = {k: v for k, v in hf_config("llama", **fields).items() if v is not None}   # None: the key is absent
    write_hf_folder(tmp_path, hf, hf_weights(hf))
    config, _ = read_pretrained(tmp_path)
    assert {k: getattr(config, k) for k in expected} == expected
    assert (config.n_embd, config.n_layer, config.block_size, config.intermediate_size, config.norm_eps) == \
        (16, 2, 32, 24, 1e-6)


@pytest.mark.parametrize("fields, message", [
    (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 32.0}), "rope_parameters of type 'llama3'"),
    (dict(rope_scaling={"type": "dynamic", "factor": 2.0}), "rope_scaling of type 'dynamic'"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_scaling of type 'yarn'"),
    (dict(model_type="qwen2", use_sliding_window=True, sliding_window=8), "use_sliding_window"),
    (dict(layer_types=["full_attention", "sliding_attention"]), "layer_types \\['sliding_attention'\\]"),
    (dict(num_experts=8), "mixture of experts"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(mlp_bias=True), "mlp_bias"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(model_type="mistral"), "model_type 'mistral' is not supported"),
    (dict(num_attention_heads=None), "lacks the llama fields \\['num_attention_heads'\\]"),
])
def test_unsupported_options_are_clear_errors(tmp_path, fields, message):
    hf = {k: v for k, v in hf_config("llama", **fields).items() if v is not None}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match=message):
        GPT.from_pretrained(tmp_path)


def test_weight_errors_name_each_weight(tmp_path):
    hf = hf_config("qwen2")
    weights = hf_weights(hf)
    del weights["model.layers.1.mlp.up_proj.weight"]
    weights["model.layers.0.self_attn.extra.weight"] = np.zeros(3, np.float32)
    weights["model.layers.0.self_attn.k_proj.bias"] = np.zeros(5, np.float32)
    weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.zeros(3, np.float32)   # ignored
    write_hf_folder(tmp_path, hf, weights)
    with pytest.raises(ValueError) as err:
        GPT.from_pretrained(tmp_path)
    msg = str(err.value)
    assert "missing: model.layers.1.mlp.up_proj.weight" in msg
    assert "unexpected: model.layers.0.self_attn.extra.weight" in msg
    assert "misshaped: model.layers.0.self_attn.k_proj.bias (5,) (expected (8,))" in msg
    assert "inv_freq" not in msg


def test_a_tied_head_that_differs_and_missing_files_are_errors(tmp_path):
    hf = hf_config("llama", tie_word_embeddings=True)
    weights = hf_weights(hf)
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"] + 1
    write_hf_folder(tmp_path, hf, weights)
    with pytest.raises(ValueError, match="lm_head.weight differs from model.embed_tokens.weight"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor model.safetensors.index.json"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="lacks gone.safetensors"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors.index.json").unlink()
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match="not a safetensors file"):
        GPT.from_pretrained(tmp_path)


# ---- export: save_pretrained and python -m gpt export ------------------------------------
ROUND_TRIPS = {   # name -> (the model_type written, the options)
    "gpt2": ("gpt2", {}),
    "gpt2-inner": ("gpt2", dict(intermediate_size=20)),
    "llama": ("llama", dict(**LLAMA, n_head=4, n_kv_head=2, tie_embeddings=False)),
    "llama-tied-mha": ("llama", dict(**LLAMA)),
    "qwen2": ("qwen2", dict(**LLAMA, n_head=4, n_kv_head=1, qkv_bias=True)),
    "qwen3": ("qwen3", dict(**LLAMA, n_head=4, n_kv_head=2, qk_norm=True, head_dim=6, tie_embeddings=False)),
}


@pytest.mark.parametrize("kind, options", ROUND_TRIPS.values(), ids=ROUND_TRIPS)
def test_save_pretrained_round_trip_gives_identical_logits(tmp_path, kind, options):
    model = tiny_model(dtype=np.float32, **options)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == kind
    loaded = GPT.from_pretrained(tmp_path)
    x = ids((2, 6), seed=8)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert loaded.config.kv_heads == model.config.kv_heads and loaded.config.head_size == model.config.head_size


def test_exported_llama_folder_matches_the_numpy_oracle(tmp_path):
    # the writer's names and row blocks, checked by the oracle rather than by our own reader
    model = tiny_model(dtype=np.float32, **ROUND_TRIPS["qwen3"][1])
    model.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "qwen3" and raw["architectures"] == ["Qwen3ForCausalLM"]
    assert raw["rope_theta"] == raw["rope_parameters"]["rope_theta"] == 10000.0   # both layouts
    from safetensors.numpy import load_file

    weights = {k: v.astype(np.float64) for k, v in load_file(str(tmp_path / "model.safetensors")).items()}
    x = ids((2, 6), seed=9)
    np.testing.assert_allclose(numpy_forward(weights, raw, x), model.to(dtype=np.float64)(x).numpy(), rtol=1e-9,
                               atol=1e-10)


@pytest.mark.parametrize("options, message", [
    (dict(norm="rmsnorm"), "the nearest, GPT-2, needs .*this model has norm='rmsnorm'"),
    (dict(**LLAMA, n_head=4, qk_norm=True, qkv_bias=True), "both qk_norm \\(Qwen3\\) and qkv_bias \\(Qwen2\\)"),
    (dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=True), "Llama/Qwen, needs .*this model has bias=True"),
    (dict(n_head=4, n_kv_head=2), "GPT-2, needs .*this model has n_kv_head=2"),
])
def test_architectures_without_a_hugging_face_equivalent_are_refused(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(dtype=np.float32, **options).save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


def byte_tokenizer() -> Tokenizer:
    text = "the cat sat on the mat. the dog sat on the log. " * 30
    return Tokenizer.train(text, vocab_size=270, special_tokens=["<|endoftext|>"], progress=False)


@needs_hf_tokenizer
@pytest.mark.parametrize("preset", ["nano", "llama-nano"])
def test_export_cli_round_trip(tmp_path, preset, capsys):
    from conftest import write_model_folder
    from gpt.train.cli import main
    from gpt.train.inference import load_for_inference

    tok = byte_tokenizer()
    write_model_folder(tmp_path / "run", tok)
    if preset == "llama-nano":     # the same folder, holding a Llama-style model
        tt.manual_seed(0)
        model = GPT(GPTConfig.preset("llama-nano", vocab_size=tok.vocab_size, n_layer=1))
        tt.save(model.state_dict(), tmp_path / "run" / "model.safetensors")
        (tmp_path / "run" / "config.json").write_text(json.dumps({"model": model.config.to_dict()}))
    main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")])
    assert "Hugging Face" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "hf").iterdir()}
    original, _ = load_for_inference(tmp_path / "run")
    exported, tok2 = load_for_inference(tmp_path / "hf")
    text = "the cat sat on the log<|endoftext|>"
    assert tok2.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    x = np.array([tok.encode("the dog sat")])
    np.testing.assert_array_equal(exported(x).numpy(), original(x).numpy())
    with pytest.raises(SystemExit, match="already holds a model"):
        main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")])


# ---- LoRA and fine-tuning on Llama blocks ----------------------------------------------------
def test_apply_lora_wraps_every_projection_of_a_llama_block():
    model = tiny_model(dtype=np.float32, **ROUND_TRIPS["qwen3"][1])
    apply_lora(model, rank=2, alpha=4.0)
    wrapped = {name for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    per_block = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_gate", "mlp.c_proj"}   # q/k/v, o, up, gate, down
    assert wrapped == {f"h.{i}.{name}" for i in range(2) for name in per_block}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith(("lora_A", "lora_B")) for name in trainable)   # lm_head, norms frozen


@needs_hf_tokenizer
def test_train_py_instruct_with_lora_from_a_llama_folder(tmp_path):
    import train

    from gpt.train.folders import export_folder, load_finetuned

    entries = [{"instruction": f"Say {w}.", "input": "", "output": w} for w in ("hi", "cat", "dog", "mat")] * 3
    tok = Tokenizer.train([json.dumps(e) for e in entries] * 5, vocab_size=290, special_tokens=["<|endoftext|>"],
                          progress=False)
    tt.manual_seed(0)
    base = GPT(GPTConfig.preset("llama-nano", vocab_size=tok.vocab_size, block_size=96, n_layer=1))
    assert export_folder(base, tok, tmp_path / "llama") == "llama"
    (tmp_path / "d.json").write_text(json.dumps(entries))
    train.main(["--task", "instruct", "--init-from", str(tmp_path / "llama"), "--data", str(tmp_path / "d.json"),
                "--out", str(tmp_path / "inst"), "--lora-rank", "8", "--epochs", "1", "--lr", "1e-2",
                "--eval-interval", "0", "--n-responses", "1", "--max-new-tokens", "2"])
    model, tok2, config = load_finetuned(tmp_path / "inst")
    assert config["lora"]["rank"] == 8 and model.config.kv_heads == 2
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 5
