"""GGUF files in (gpt/gguf.py, bpe/gguf.py): small files written here with the gguf package's
own GGUFWriter and quantizers, and the real SmolLM2 GGUF of ../shared when it is there.

The q/k permutation written here is llama.cpp's converter's (convert_hf_to_gguf.py,
`LlamaModel.permute`), spelled out independently of the loader's inverse."""
from __future__ import annotations

import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402
from hypothesis import given, strategies as st  # noqa: E402

from bpe import Tokenizer  # noqa: E402
from bpe.files import TokenizerFileError  # noqa: E402
from bpe.gpt2 import byte_to_char  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402

SMOLLM2 = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = "Hello world! It's 2024: 12345 apples,  and\tthe  end.\n\nNaïve café — 日本語 😀 <|endoftext|> x"


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's permute: each head's rows (2, D/2) -> (D/2, 2)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def small_tokenizer() -> Tokenizer:
    return Tokenizer.train(TEXT * 3, vocab_size=256 + 40 + 1, special_tokens=["<|endoftext|>"], progress=False)


def gguf_tensors(model: GPT, arch: str, permute: bool) -> dict[str, np.ndarray]:
    """The model's weights under GGUF's names, q and k rows permuted as llama.cpp's converter does."""
    cfg, sd = model.config, {k: np.asarray(v) for k, v in model.state_dict().items()}
    H, Hkv, D = cfg.n_head, cfg.kv_heads, cfg.head_size
    out = {"token_embd.weight": sd["wte.weight"], "output_norm.weight": sd["ln_f.weight"]}
    if not cfg.tie_embeddings:
        out["output.weight"] = sd["lm_head.weight"]
    for i in range(cfg.n_layer):
        p, g = f"h.{i}.", f"blk.{i}."
        w = sd[p + "attn.c_attn.weight"]
        q, k, v = w[:H * D], w[H * D:(H + Hkv) * D], w[(H + Hkv) * D:]
        if permute:
            q, k = llama_cpp_permute(q, H), llama_cpp_permute(k, Hkv)
        out |= {g + "attn_q.weight": q, g + "attn_k.weight": k, g + "attn_v.weight": v,
                g + "attn_norm.weight": sd[p + "ln_1.weight"], g + "attn_output.weight": sd[p + "attn.c_proj.weight"],
                g + "ffn_norm.weight": sd[p + "ln_2.weight"], g + "ffn_gate.weight": sd[p + "mlp.c_gate.weight"],
                g + "ffn_up.weight": sd[p + "mlp.c_fc.weight"], g + "ffn_down.weight": sd[p + "mlp.c_proj.weight"]}
        if cfg.qkv_bias:
            b = sd[p + "attn.c_attn.bias"]
            out |= {g + "attn_q.bias": b[:H * D], g + "attn_k.bias": b[H * D:(H + Hkv) * D],
                    g + "attn_v.bias": b[(H + Hkv) * D:]}
        if cfg.qk_norm:
            out |= {g + "attn_q_norm.weight": sd[p + "attn.q_norm.weight"],
                    g + "attn_k_norm.weight": sd[p + "attn.k_norm.weight"]}
    return out


def write_gguf(path, cfg: GPTConfig, tensors: dict[str, np.ndarray], tok: Tokenizer | None = None,
               arch: str = "llama", qtype: Q = Q.F32, pre: str = "gpt-2", model: str = "gpt2",
               raw: dict[str, tuple[np.ndarray, Q]] | None = None, extra=None) -> None:
    """A GGUF file: the metadata of cfg, the tensors (matrices as qtype, vectors as F32), a tokenizer."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.n_layer)
    w.add_context_length(cfg.block_size)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(cfg.mlp_hidden)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.kv_heads)
    w.add_key_length(cfg.head_size)
    w.add_value_length(cfg.head_size)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    if extra:
        extra(w)
    if tok is not None:
        show = byte_to_char()
        specials = {i: name for name, i in tok.special_tokens.items()}
        tokens = [specials.get(i) or "".join(show[b] for b in tok.decode_bytes([i])) for i in range(tok.vocab_size)]
        w.add_tokenizer_model(model)
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types([3 if i in specials else 1 for i in range(tok.vocab_size)])
        w.add_token_merges([f"{tokens[a]} {tokens[b]}" for a, b in tok.merges])
        w.add_eos_token_id(tok.special_tokens["<|endoftext|>"])
    for name, arr in tensors.items():
        kind = qtype if arr.ndim == 2 else Q.F32
        data = arr.astype(np.float32)
        if kind == Q.F16:
            w.add_tensor(name, data.astype(np.float16))
        elif kind == Q.F32:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, quantize(data, kind), raw_dtype=kind)
    for name, (data, kind) in (raw or {}).items():
        w.add_tensor(name, data, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tiny(**kw) -> GPT:
    cfg = dict(vocab_size=297, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, intermediate_size=64,
               pos="rope", mlp="swiglu", norm="rmsnorm", bias=False, rope_base=10000.0, norm_eps=1e-5)
    return GPT(GPTConfig(**{**cfg, **kw}))


def logits(model: GPT, ids=((5, 9, 200, 3, 77, 1, 2, 150),)) -> np.ndarray:
    return model.eval()(np.array(ids)).numpy()


# ---- weights ------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, kw", [("llama", {}), ("llama", {"tie_embeddings": False}),
                                      ("qwen2", {"qkv_bias": True}), ("qwen3", {"qk_norm": True, "head_dim": 16})])
def test_float32_file_gives_the_models_logits(tmp_path, arch, kw):
    model = tiny(**kw)
    path = tmp_path / "m.gguf"
    write_gguf(path, model.config, gguf_tensors(model, arch, permute=arch == "llama"), arch=arch)
    loaded = GPT.from_pretrained(path)
    assert loaded.config == model.config
    np.testing.assert_allclose(logits(loaded), logits(model), atol=1e-5)


def test_the_permutation_is_undone(tmp_path):
    """A llama file whose q/k rows were not permuted gives other logits: the loader does unpermute."""
    model = tiny()
    path = tmp_path / "m.gguf"
    write_gguf(path, model.config, gguf_tensors(model, "llama", permute=False))
    assert np.abs(logits(GPT.from_pretrained(path)) - logits(model)).max() > 1e-4   # 10x the tolerance above


def test_tied_and_untied_heads(tmp_path):
    for tie in (True, False):
        model = tiny(tie_embeddings=tie)
        path = tmp_path / f"{tie}.gguf"
        tensors = gguf_tensors(model, "llama", permute=True)
        assert ("output.weight" in tensors) is not tie
        write_gguf(path, model.config, tensors)
        loaded = GPT.from_pretrained(path)
        assert loaded.config.tie_embeddings is tie
        assert hasattr(loaded, "lm_head") is not tie
        if not tie:
            np.testing.assert_array_equal(loaded.lm_head.weight.numpy(), model.lm_head.weight.numpy())


@pytest.mark.parametrize("qtype", [Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1], ids=lambda q: q.name)
def test_each_quantization_type_dequantizes_into_its_weights(tmp_path, qtype):
    model = tiny()
    path = tmp_path / "m.gguf"
    write_gguf(path, model.config, gguf_tensors(model, "llama", permute=True), qtype=qtype)
    loaded = GPT.from_pretrained(path)
    for name, p in model.state_dict().items():
        w = np.asarray(p)
        # blocks run along a row, so quantizing then permuting rows is permuting then quantizing
        expected = dequantize(quantize(w, qtype), qtype).astype(np.float32) if w.ndim == 2 else w
        got = np.asarray(loaded.state_dict()[name])
        np.testing.assert_array_equal(got, expected, err_msg=name)
        assert np.abs(got - w).max() <= 0.3 * np.abs(w).max()      # and they are the weights, roughly


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q6_K], ids=lambda q: q.name)
def test_k_quants_dequantize(tmp_path, qtype):
    """gguf cannot quantize K-quants, so the FFN gate is raw blocks; the loader gives what the package decodes."""
    model = tiny(n_embd=256, n_head=4, n_kv_head=2)
    tensors = gguf_tensors(model, "llama", permute=True)
    del tensors["blk.0.ffn_gate.weight"]
    M, C = model.config.mlp_hidden, model.config.n_embd
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = np.random.default_rng(0).integers(0, 256, (M, C // block * size), dtype=np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):
        decoded = dequantize(blocks, qtype)
    blocks[~np.isfinite(decoded).all(axis=1)] = 0        # rows whose random scales are not finite numbers
    path = tmp_path / "k.gguf"
    write_gguf(path, model.config, tensors, raw={"blk.0.ffn_gate.weight": (blocks, qtype)})
    got = GPT.from_pretrained(path).h[0].mlp.c_gate.weight.numpy()
    assert got.shape == (M, C)
    np.testing.assert_array_equal(got, dequantize(blocks, qtype))


# ---- refused files ------------------------------------------------------------------------
def test_unknown_architecture_names_general_architecture(tmp_path):
    model = tiny()
    path = tmp_path / "m.gguf"
    write_gguf(path, model.config, gguf_tensors(model, "llama", permute=True), arch="mamba")
    with pytest.raises(ValueError, match=r"general\.architecture is 'mamba'"):
        GPT.from_pretrained(path)


def test_an_unmapped_tensor_is_named(tmp_path):
    model = tiny()
    tensors = gguf_tensors(model, "llama", permute=True) | {"blk.0.attn_gate.weight": np.ones((4, 32), np.float32)}
    write_gguf(tmp_path / "m.gguf", model.config, tensors)
    with pytest.raises(ValueError, match="blk.0.attn_gate.weight"):
        GPT.from_pretrained(tmp_path / "m.gguf")


def test_a_missing_tensor_is_named(tmp_path):
    model = tiny()
    tensors = gguf_tensors(model, "llama", permute=True)
    del tensors["blk.1.ffn_up.weight"]
    write_gguf(tmp_path / "m.gguf", model.config, tensors)
    with pytest.raises(ValueError, match="lacks the tensor 'blk.1.ffn_up.weight'"):
        GPT.from_pretrained(tmp_path / "m.gguf")


def test_sizes_that_do_not_match_the_metadata(tmp_path):
    model = tiny()
    bigger = GPTConfig(**{**model.config.to_dict(), "intermediate_size": 128})   # the metadata says 128, tensors 64
    write_gguf(tmp_path / "m.gguf", bigger, gguf_tensors(model, "llama", permute=True))
    with pytest.raises(ValueError, match=r"blk.0.ffn_gate.weight has shape \(64, 32\), but the metadata implies "
                                         r"\(128, 32\)"):
        GPT.from_pretrained(tmp_path / "m.gguf")


def test_a_context_too_long_to_allocate_is_refused(tmp_path):
    model = tiny()
    huge = GPTConfig(**{**model.config.to_dict(), "block_size": 1 << 31})
    write_gguf(tmp_path / "m.gguf", huge, gguf_tensors(model, "llama", permute=True))
    with pytest.raises(ValueError, match="context_length 2,147,483,648 is more than"):
        GPT.from_pretrained(tmp_path / "m.gguf")


def test_rope_tables_larger_than_the_model_name_the_gguf_file(tmp_path):
    model = tiny(n_embd=256, n_head=1, n_kv_head=None, n_layer=1)          # head size 256: 2 GiB of tables
    long = GPTConfig(**{**model.config.to_dict(), "block_size": 1 << 21})
    write_gguf(tmp_path / "m.gguf", long, gguf_tensors(model, "llama", permute=True))
    with pytest.raises(ValueError, match=r"m\.gguf declares 2,097,152 positions") as e:
        GPT.from_pretrained(tmp_path / "m.gguf")
    assert "config.json" not in str(e.value)


def test_a_truncated_file_is_refused(tmp_path):
    model = tiny()
    path = tmp_path / "m.gguf"
    write_gguf(path, model.config, gguf_tensors(model, "llama", permute=True))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 1000])
    with pytest.raises(ValueError, match="truncated"):
        GPT.from_pretrained(path)


def test_scaled_rope_of_another_type_is_refused(tmp_path):
    model = tiny()
    write_gguf(tmp_path / "m.gguf", model.config, gguf_tensors(model, "llama", permute=True),
               extra=lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.YARN))
    with pytest.raises(ValueError, match="rope.scaling.type 'yarn'"):
        GPT.from_pretrained(tmp_path / "m.gguf")


def test_not_a_gguf_file(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"not a gguf at all, just bytes" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF"):
        GPT.from_pretrained(tmp_path / "x.gguf")


# ---- tokenizer ----------------------------------------------------------------------------
def test_tokenizer_ids_equal_the_trained_tokenizers_and_tokenizers_libs(tmp_path):
    tok = small_tokenizer()
    model = tiny()
    write_gguf(tmp_path / "m.gguf", model.config, gguf_tensors(model, "llama", permute=True), tok)
    read = Tokenizer.from_gguf(tmp_path / "m.gguf")
    text = TEXT + " more text: 3.14159 isn't   it?"
    assert read.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    assert read.special_tokens == tok.special_tokens
    assert read.decode(read.encode(text, allowed_special="all")) == text


@pytest.mark.parametrize("pre, message", [("no-such-pre", "tokenizer.ggml.pre is 'no-such-pre'"),
                                          ("default", "tokenizer.ggml.pre is 'default'")])
def test_unknown_pre_tokenizer_is_an_error(tmp_path, pre, message):
    model = tiny()
    write_gguf(tmp_path / "m.gguf", model.config, gguf_tensors(model, "llama", permute=True), small_tokenizer(),
               pre=pre)
    with pytest.raises(TokenizerFileError, match=message):
        Tokenizer.from_gguf(tmp_path / "m.gguf")


def test_sentencepiece_tokenizer_is_an_error(tmp_path):
    model = tiny()
    write_gguf(tmp_path / "m.gguf", model.config, gguf_tensors(model, "llama", permute=True), small_tokenizer(),
               model="llama")
    with pytest.raises(TokenizerFileError, match="tokenizer.ggml.model is 'llama'"):
        Tokenizer.from_gguf(tmp_path / "m.gguf")


def _llama_cpp_split(text: str, regexes: list[str]) -> list[str]:
    """llama.cpp's unicode_regex_split: each regex splits each piece; text between matches is a piece too."""
    import regex

    pieces = [text]
    for pattern in regexes:
        compiled, out = regex.compile(pattern), []
        for piece in pieces:
            start = 0
            for m in compiled.finditer(piece):
                out += [piece[start:m.start()]] if m.start() > start else []
                out.append(m.group())
                start = m.end()
            out += [piece[start:]] if start < len(piece) else []
        pieces = out
    return pieces


SMOLLM_LLAMA_CPP = [r"\p{N}", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"]


@given(st.text(alphabet=" \t\n\r1234567890aZé日'.,!-_sdt" + "\u00a0\u2003\u0663", max_size=40))
def test_smollm_pattern_splits_as_llama_cpps_two_regexes(text):
    from bpe.gguf import PATTERNS
    from bpe.pretokenize import split_pretokenizer

    assert split_pretokenizer(PATTERNS["smollm"][0])(text) == _llama_cpp_split(text, SMOLLM_LLAMA_CPP)


# ---- the real SmolLM2 GGUF ----------------------------------------------------------------
def test_smollm2_tokenizer_equals_tokenizers_with_smollm2s_pre_tokenizer(shared_data):
    """The oracle is the `tokenizers` library, given the file's vocabulary and merges and
    SmolLM2's tokenizer.json pre-tokenizer (Digits one by one, then ByteLevel): not the
    file's own tokenizer.json (there is none offline) and not one written from the GGUF by us."""
    tokenizers = pytest.importorskip("tokenizers")
    from bpe.gguf import metadata, open_gguf

    path = shared_data / SMOLLM2
    tok = Tokenizer.from_gguf(path)
    reader = open_gguf(path)
    tokens, types = metadata(reader, "tokenizer.ggml.tokens"), metadata(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in metadata(reader, "tokenizer.ggml.merges")]
    hf = tokenizers.Tokenizer(tokenizers.models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    pre = tokenizers.pre_tokenizers
    hf.pre_tokenizer = pre.Sequence([pre.Digits(individual_digits=True),
                                     pre.ByteLevel(add_prefix_space=False, use_regex=True)])
    hf.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                           for t, k in zip(tokens, types) if k == 3])
    texts = [(shared_data / "the-verdict.txt").read_text(encoding="utf-8"),
             (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:100_000],
             "Mixed: Привет мир, 日本語のテキスト, العربية, emoji 😀👍🏽, 12345 and 3.14, a  1  x\t\t3 \r\n\n  ",
             "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"]
    for text in texts:
        assert tok.encode(text, allowed_special="all") == hf.encode(text, add_special_tokens=False).ids
    assert tok.special_tokens["<|im_end|>"] == 2 and tok.vocab_size == 49152


@pytest.mark.slow
def test_smollm2_greedy_generation_equals_the_exported_folders(shared_data, tmp_path):
    from gpt.train.folders import export_folder
    from gpt.train.inference import load_for_inference

    model, tok = load_for_inference(shared_data / SMOLLM2)
    assert model.config.n_layer == 30 and model.config.kv_heads == 3 and model.config.tie_embeddings
    export_folder(model, tok, tmp_path / "hf")
    again, tok2 = load_for_inference(tmp_path / "hf")
    prompt = tok.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
                        allowed_special="all")
    assert tok2.encode(TEXT, allowed_special="all") == tok.encode(TEXT, allowed_special="all")
    out = model.generate([prompt], 12, temperature=0)
    np.testing.assert_array_equal(again.generate([prompt], 12, temperature=0), out)
    assert "Paris" in tok.decode(out[0, len(prompt):].tolist())


# ---- a GGUF as a base: fine-tuning and export ---------------------------------------------------
def _tiny_file(tmp_path, tie: bool = True):
    tok = small_tokenizer()
    model = tiny(vocab_size=tok.vocab_size, block_size=64, tie_embeddings=tie)
    path = tmp_path / "base.gguf"
    write_gguf(path, model.config, gguf_tensors(model, "llama", permute=True), tok)
    return path, model, tok


def test_lora_instruction_tuning_from_a_gguf(tmp_path):
    import json

    import train
    from gpt.train.folders import load_finetuned

    path, model, tok = _tiny_file(tmp_path)
    entries = [{"instruction": "Say hello", "input": "", "output": "Hello world"},
               {"instruction": "Count", "input": "", "output": "1 2 3"}] * 4
    (tmp_path / "d.json").write_text(json.dumps(entries))
    train.main(["--task", "instruct", "--init-from", str(path), "--data", str(tmp_path / "d.json"),
                "--out", str(tmp_path / "lora"), "--epochs", "1", "--lr", "1e-2", "--eval-interval", "0",
                "--lora-rank", "8", "--n-responses", "1", "--max-new-tokens", "2", "--max-length", "48"])
    config = json.loads((tmp_path / "lora" / "config.json").read_text())
    assert config["lora"]["rank"] == 8 and config["lora"]["base"] == str(path)
    tuned, tok2, _ = load_finetuned(tmp_path / "lora")
    ids = np.array([tok.encode("Say hello")])
    assert tok2.encode(TEXT, allowed_special="all") == tok.encode(TEXT, allowed_special="all")
    assert not np.allclose(tuned(ids).numpy(), logits(model, ids))          # the adapters learned something


def test_export_a_gguf_as_a_hugging_face_folder(tmp_path):
    from gpt.train.cli import main

    path, model, tok = _tiny_file(tmp_path, tie=False)
    main(["export", "--checkpoint", str(path), "--out", str(tmp_path / "hf")])
    again = GPT.from_pretrained(tmp_path / "hf")
    np.testing.assert_allclose(logits(again), logits(model), atol=1e-5)
    assert Tokenizer.from_hf(tmp_path / "hf" / "tokenizer.json").encode(TEXT, allowed_special="all") == \
        tok.encode(TEXT, allowed_special="all")


def test_loading_draws_no_random_weights(tmp_path):
    """from_pretrained builds the model inside nn.skip_init(): the generator does not move, and
    every weight is the file's."""
    import tinytensor as tt
    from tinytensor.random import get_rng_state

    model = tiny(tie_embeddings=False)
    write_gguf(tmp_path / "m.gguf", model.config, gguf_tensors(model, "llama", permute=True))
    tt.manual_seed(0)
    before = get_rng_state()
    loaded = GPT.from_pretrained(tmp_path / "m.gguf")
    assert get_rng_state() == before
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(np.asarray(loaded.state_dict()[name]), np.asarray(value), err_msg=name)
    tt.manual_seed(0)
    assert not np.array_equal(GPT(model.config).wte.weight.numpy(), loaded.wte.weight.numpy())   # outside: drawn


def test_without_the_gguf_package_the_error_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "gguf", None)          # import gguf now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'tinygpt\[gguf\]'"):
        GPT.from_pretrained(tmp_path / "m.gguf")


@pytest.mark.parametrize("add_bos", [True, False])
def test_eval_puts_the_files_bos_first_when_it_says_so(tmp_path, add_bos, capsys):
    """tokenizer.ggml.add_bos_token: eval's text starts with tokenizer.ggml.bos_token_id, so the
    first text token is scored after it (one more token scored than without)."""
    import json

    from gpt.train.cli import main
    from gpt.train.evaluate import bos_id

    tok = small_tokenizer()
    model = tiny(vocab_size=tok.vocab_size, block_size=64)
    eot = tok.special_tokens["<|endoftext|>"]

    def flags(w):
        w.add_bool("tokenizer.ggml.add_bos_token", add_bos)
        w.add_bos_token_id(eot)

    path = tmp_path / "m.gguf"
    write_gguf(path, model.config, gguf_tensors(model, "llama", permute=True), tok, extra=flags)
    assert bos_id(path, tok) == (eot if add_bos else None)
    (tmp_path / "t.txt").write_text(TEXT)
    main(["eval", "--checkpoint", str(path), "--data", str(tmp_path / "t.txt"), "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["tokens"] == len(tok.encode(TEXT, disallowed_special=())) - 1 + add_bos


def test_a_bos_id_outside_the_vocabulary_is_named(tmp_path):
    from gpt.train.evaluate import bos_id

    tok = small_tokenizer()
    model = tiny(vocab_size=tok.vocab_size, block_size=64)

    def flags(w):
        w.add_bool("tokenizer.ggml.add_bos_token", True)
        w.add_bos_token_id(10**6)

    write_gguf(tmp_path / "m.gguf", model.config, gguf_tensors(model, "llama", permute=True), tok, extra=flags)
    with pytest.raises(ValueError, match="tokenizer.ggml.bos_token_id is 1000000"):
        bos_id(tmp_path / "m.gguf", tok)
