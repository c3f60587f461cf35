"""safetensors checkpoints: round trips, atomic writes, and clear refusals (never unpickling)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

import tinytensor as tt
from tinytensor import nn, serialize


def test_round_trip_keeps_names_dtypes_and_values(tmp_path, device):
    state = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "ids": np.array([3, -1, 7], dtype=np.int64),
        "flag": np.array([True, False]),
        "scalar": np.array(2.5),
        "t": tt.tensor([[1.0, 2.0]], dtype=np.float16, device=device),
        "strided": np.arange(10.0)[::2],
    }
    path = tmp_path / "ckpt.safetensors"
    serialize.save(state, path, metadata={"step": "12"})
    loaded = serialize.load(path, device=device)
    assert sorted(loaded) == sorted(state)
    for name, value in state.items():
        expected = value.numpy() if isinstance(value, tt.Tensor) else value
        got = tt.tensor(loaded[name]).numpy()
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
        assert tt.tensor(loaded[name]).device == device
    assert serialize.load_metadata(path) == {"step": "12"}
    serialize.save({"a": np.zeros(1)}, path)  # overwrites
    assert serialize.load_metadata(path) == {} and list(serialize.load(path)) == ["a"]


def test_model_state_round_trips_through_a_file(tmp_path, device):
    tt.manual_seed(0)
    a = nn.Sequential(nn.Embedding(5, 3), nn.LayerNorm(3), nn.Linear(3, 5)).to(device)
    tt.manual_seed(1)
    b = nn.Sequential(nn.Embedding(5, 3), nn.LayerNorm(3), nn.Linear(3, 5)).to(device)
    serialize.save(a.state_dict(), tmp_path / "model.safetensors")
    b.load_state_dict(serialize.load(tmp_path / "model.safetensors"))
    ids = np.array([[0, 4, 2]])
    np.testing.assert_array_equal(a(ids).numpy(), b(ids).numpy())


def test_save_leaves_no_temp_file_and_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    serialize.save({"a": np.ones(3)}, path)
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]
    if os.name == "posix":
        assert path.stat().st_mode & 0o777 == 0o644      # readable by others, like any saved file

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        serialize.save({"a": np.zeros(3)}, path)
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # temp file removed
    np.testing.assert_array_equal(serialize.load(path)["a"], np.ones(3))  # old file intact


def test_save_refuses_what_safetensors_cannot_hold(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match="'lr'.*float"):
        serialize.save({"w": np.ones(2), "lr": 0.1}, path)
    with pytest.raises(TypeError, match="'names'.*dtype"):
        serialize.save({"names": np.array(["a", "b"])}, path)
    with pytest.raises(TypeError, match="keys must be strings"):
        serialize.save({0: np.ones(2)}, path)
    with pytest.raises(TypeError, match="metadata must map str to str"):
        serialize.save({"w": np.ones(2)}, path, metadata={"step": 12})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        serialize.save({"w": np.ones(2)}, tmp_path / "no" / "such" / "x.safetensors")
    assert not path.exists() and os.listdir(tmp_path) == []


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file at"):
        serialize.load(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ValueError, match="not a safetensors file"):
        serialize.load(garbage)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a safetensors file"):
        serialize.load(empty)
    good = tmp_path / "good.safetensors"
    serialize.save({"w": np.ones((100, 100))}, good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(serialize.CorruptFileError, match="truncated or corrupt"):
        serialize.load(truncated)
    truncated.write_bytes(good.read_bytes()[:40])          # cut inside the header: still no talk of pickles
    with pytest.raises(serialize.CorruptFileError, match="truncated safetensors file") as e:
        serialize.load(truncated)
    assert "pickle" not in str(e.value)
    with pytest.raises(ValueError, match="unknown device"):
        serialize.load(good, device="tpu")


class _Payload:
    """Unpickling this creates a file: proof that pickle data was executed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_a_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path = tmp_path / f"evil{protocol}.pt"
        path.write_bytes(pickle.dumps({"w": _Payload(str(marker))}, protocol=protocol))
        with pytest.raises(ValueError, match="never loaded"):
            serialize.load(path)
        with pytest.raises(ValueError, match="not a safetensors file"):
            serialize.load_metadata(path)
    assert not marker.exists()
