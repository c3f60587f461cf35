"""Hostile files: a model folder may come from anyone. Reading one never reads outside it,
never allocates more than its weights justify, and never ends in a traceback."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from test_gpt import tiny_model

from gpt import GPT
from gpt.files import inside, read_safetensors_header
from gpt.train.cli import main as gpt_cli

LLAMA = dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False, tie_embeddings=False)


def llama_folder(folder: Path) -> Path:
    tiny_model(dtype=np.float32, **LLAMA).save_pretrained(folder)
    return folder


def sharded(folder: Path, evil_shard: str) -> Path:
    """A Llama folder whose index sends one tensor to `evil_shard`."""
    llama_folder(folder)
    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    save_file(weights, str(folder / "model-00001.safetensors"))
    weight_map = {name: "model-00001.safetensors" for name in weights}
    weight_map["model.norm.weight"] = evil_shard
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


# ---- paths stay inside the folder ---------------------------------------------------------
@pytest.mark.parametrize("evil", ["../../outside/evil.safetensors", "/etc/hostname", "../../../../etc/hostname",
                                  "link.safetensors"])
def test_a_shard_outside_the_folder_is_refused_naming_the_entry(tmp_path, evil):
    outside = tmp_path / "outside"
    outside.mkdir()
    save_file({"model.norm.weight": np.ones(8, np.float32)}, str(outside / "evil.safetensors"))
    folder = sharded(tmp_path / "a" / "b", evil)
    if evil == "link.safetensors":                # a symlink that leaves the folder
        (folder / evil).symlink_to(outside / "evil.safetensors")
    with pytest.raises(ValueError, match=r"weight_map\['model\.norm\.weight'\].*names the file .*outside"):
        GPT.from_pretrained(folder)


def test_a_shard_inside_the_folder_still_loads(tmp_path):
    folder = sharded(tmp_path / "m", "./model-00001.safetensors")
    assert isinstance(GPT.from_pretrained(folder), GPT)


@pytest.mark.parametrize("name", ["../x", "/abs", "", 3, None, "a\0b"])
def test_inside_refuses_every_name_that_is_not_a_file_of_the_folder(tmp_path, name):
    with pytest.raises(ValueError, match=r"names the file"):
        inside(tmp_path, name, "index.json")
    assert inside(tmp_path, "a/b.bin", "index.json") == tmp_path / "a" / "b.bin"


def test_a_checksum_naming_a_file_outside_the_folder_is_refused(tmp_path):
    from conftest import write_model_folder

    from bpe import Tokenizer

    write_model_folder(tmp_path / "m", Tokenizer())
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["checksums"] = {"model.safetensors": {"sha256": "0" * 64, "bytes": 1}, "../../../etc/passwd":
                           {"sha256": "0" * 64, "bytes": 1}}
    config["task"] = "instruct"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match=r"names the file '\.\./\.\./\.\./etc/passwd', which is outside"):
        gpt_cli(["sample", "--checkpoint", str(tmp_path / "m"), "--max-new-tokens", "1"])


# ---- sizes are checked against the weights before anything is built ---------------------------
def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("field, value, named", [
    ("n_positions", 10**9, "n_positions"), ("n_layer", 100000, "n_layer 100000"),
    ("n_embd", 4096, "n_embd"), ("vocab_size", 10**9, "vocab_size"), ("n_inner", 10**7, "n_inner"),
])
def test_a_gpt2_config_declaring_more_than_its_weights_is_refused_naming_the_field(tmp_path, field, value, named):
    tiny_model(dtype=np.float32).save_pretrained(tmp_path)
    edit_config(tmp_path, **{field: value}, **({"n_head": 1} if field == "n_embd" else {}))
    with pytest.raises(ValueError, match=named):
        GPT.from_pretrained(tmp_path)


@pytest.mark.parametrize("field, value, named", [
    ("max_position_embeddings", 10**9, "max_position_embeddings"), ("num_hidden_layers", 100000, "num_hidden_layers"),
])
def test_a_llama_config_declaring_more_than_its_weights_is_refused_naming_the_field(tmp_path, field, value, named):
    edit_config(llama_folder(tmp_path), **{field: value})
    with pytest.raises(ValueError, match=named):
        GPT.from_pretrained(tmp_path)
    # shortening the context is an override the caller may give
    if field == "max_position_embeddings":
        assert GPT.from_pretrained(tmp_path, block_size=32).config.block_size == 32


def test_our_config_declaring_more_layers_than_its_weights_is_refused(tmp_path):
    from conftest import write_model_folder

    from bpe import Tokenizer

    write_model_folder(tmp_path, Tokenizer())
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["n_layer"] = 100000
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="n_layer 100000, the weights carry 1 layers"):
        GPT.from_pretrained(tmp_path)


# ---- malformed headers and wrong types --------------------------------------------------------
def write_raw_safetensors(path: Path, header: object, data: bytes = b"\0" * 64) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


@pytest.mark.parametrize("entry, named", [
    ({"dtype": "F32", "shape": [4]}, "data_offsets None"),
    ({"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}, "shape '4'"),
    ([1, 2, 3], "is a list"),
    ({"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}, "do not make its shape"),
    ({"dtype": "F32", "shape": [4], "data_offsets": [0, 10**9]}, "truncated"),
    ({"dtype": "Q9", "shape": [4], "data_offsets": [0, 16]}, "dtype 'Q9'"),
])
def test_a_malformed_safetensors_header_is_one_error_naming_the_entry(tmp_path, entry, named):
    llama_folder(tmp_path)
    write_raw_safetensors(tmp_path / "model.safetensors", {"model.norm.weight": entry})
    with pytest.raises(ValueError, match=named):
        read_safetensors_header(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=named):
        GPT.from_pretrained(tmp_path)


@pytest.mark.parametrize("make, field, value", [
    (dict(), "layer_norm_epsilon", "abc"), (LLAMA, "rms_norm_eps", None), (LLAMA, "intermediate_size", "big"),
    (dict(), "n_head", 1.5), (LLAMA, "num_key_value_heads", "2"),
])
def test_a_config_value_of_the_wrong_type_is_one_error_naming_the_field(tmp_path, make, field, value):
    tiny_model(dtype=np.float32, **make).save_pretrained(tmp_path)
    edit_config(tmp_path, **{field: value})
    with pytest.raises(ValueError, match=f"{field} must be"):
        GPT.from_pretrained(tmp_path)


def test_our_config_of_the_wrong_type_names_the_field(tmp_path):
    from conftest import write_model_folder

    from bpe import Tokenizer

    write_model_folder(tmp_path, Tokenizer())
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["norm_eps"] = "abc"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="GPTConfig.norm_eps must be a finite number"):
        GPT.from_pretrained(tmp_path)


# ---- nothing sampled from broken weights -------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_weights_holding_nan_or_inf_are_refused_at_load(tmp_path, bad):
    tiny_model(dtype=np.float32).save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["transformer.h.0.mlp.c_fc.weight"][3, 2] = bad
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"h\.0\.mlp\.c_fc\.weight holds NaN or infinite values"):
        GPT.from_pretrained(tmp_path)


@pytest.mark.parametrize("changes, named", [({"labels": None}, "'labels' must be a list"),
                                            ({"n_classes": 7}, "'n_classes' must be the number of labels"),
                                            ({"lora": {"rank": 2}}, "'lora' must be null or"),
                                            ({"model": [1]}, "'model' must be an object")])
def test_a_fine_tuned_config_with_a_malformed_field_names_it(tmp_path, changes, named):
    from conftest import write_model_folder

    from bpe import Tokenizer

    write_model_folder(tmp_path, Tokenizer())
    config = json.loads((tmp_path / "config.json").read_text())
    config.update({"task": "classify", "labels": ["a", "b"], "n_classes": 2, "lora": None, **changes})
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match=named):
        gpt_cli(["classify", "--checkpoint", str(tmp_path), "some text"])
