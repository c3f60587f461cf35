"""Shared test setup: hypothesis profiles, devices, the shared data folder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinytensor as tt
from tinytensor.backend import get_array_module, to_device

# "ci" (the default) keeps the suite to a few minutes on 2 cores; "thorough"
# runs many more examples: HYPOTHESIS_PROFILE=thorough pytest
settings.register_profile(
    "ci", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# "smoke": a few examples each, for the cuda pass of .ci/run under the strict CuPy stand-in, which looks for
# host/device mixing (a code path, not a value: the cpu pass covers the values)
settings.register_profile(
    "smoke", max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# tests that run on every device take the `device` fixture; "cuda" skips without a GPU
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def as_numpy(x) -> np.ndarray:
    """A NumPy copy of any array, NumPy or CuPy (or of a Tensor's data, a list, a number), for
    assertions: np.testing refuses CuPy arrays, as NumPy code on a GPU's arrays must. A copy, so
    a value kept for later stays as it was when an in-place update changes the array."""
    if isinstance(x, tt.Tensor):
        x = x.data
    return np.array(x) if get_array_module(x) is np else to_device(x, "cpu")

# hypothesis strategies the gradient checks share
seeds = st.integers(0, 2**31 - 1)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)


def rand(shape, seed, low=-2.0, high=2.0, dtype=np.float64, device="cpu") -> tt.Tensor:
    """A leaf tensor of uniform values in [low, high), seeded: the input of most gradient checks."""
    arr = np.random.default_rng(seed).uniform(low, high, size=shape)
    return tt.tensor(arr, requires_grad=True, dtype=dtype, device=device)


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    if tt.cuda_is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU (CuPy with a visible device) here")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# module-scoped, so that hypothesis tests (@given) may take it too
@pytest.fixture(params=DEVICES, scope="module")
def device(request) -> str:
    return request.param


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def write_model_folder(folder: Path, tok, n_layer: int = 1, n_embd: int = 16, block_size: int = 48):
    """One of our model folders (config.json, model.safetensors, tokenizer.json) holding a
    random tiny GPT (seeded) over `tok`'s vocabulary; returns the model."""
    import json

    from gpt import GPT, GPTConfig

    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=n_layer, n_head=2, n_embd=n_embd))
    folder.mkdir(parents=True, exist_ok=True)
    tt.save(model.state_dict(), folder / "model.safetensors")
    tok.save(folder / "tokenizer.json")
    (folder / "config.json").write_text(json.dumps({"model": model.config.to_dict()}))
    return model


# a pretraining run small enough for a test: one layer, 16 wide, byte-level
TINY_RUN = ["--preset", "nano", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
            "--batch-size", "4", "--tokenizer", "bytes", "--eval-iters", "1", "--sample-tokens", "4",
            "--warmup-iters", "1", "--peak-flops", "1e9"]


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Six short documents in a folder."""
    d = tmp_path / "docs"
    d.mkdir()
    for i in range(6):
        (d / f"{i}.txt").write_text(f"the cat sat on the mat number {i}. " * 20)
    return d


def train_run(corpus: Path, out: Path, *flags: str) -> None:
    """train.py's main with TINY_RUN's settings on `corpus`, writing to `out`."""
    import train

    train.main(TINY_RUN + ["--data", str(corpus), "--out", str(out), *flags])
