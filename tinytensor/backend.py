"""Where arrays live: NumPy on the CPU, CuPy on an NVIDIA GPU.

Code that may run on either device never imports numpy directly for array
math; it asks the array which module made it (`get_array_module(x)`), so the
same line of math runs on both. CuPy is imported only when a tensor is moved to
"cuda", so the CPU path never needs it installed.
"""
from __future__ import annotations

import sys
from types import ModuleType

import numpy as np

DEVICES = ("cpu", "cuda")


def _cupy() -> ModuleType:
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError(
            "device 'cuda' needs CuPy, which is not installed: "
            "pip install 'cupy-cuda12x' (or the build matching your CUDA), "
            "or use device='cpu'"
        ) from e
    return cupy


def get_array_module(x) -> ModuleType:
    """numpy for NumPy arrays and scalars, cupy for CuPy arrays."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy
    return np


def device_of(x) -> str:
    return "cpu" if get_array_module(x) is np else "cuda"


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    return device


def to_device(x, device: str):
    """Copy an array to `device` (no copy when it is already there)."""
    check_device(device)
    if device_of(x) == device:
        return x
    if device == "cuda":
        return _cupy().asarray(x)
    return x.get()


def cuda_is_available() -> bool:
    try:
        cupy = _cupy()
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def tune_allocator() -> bool:
    """Ask glibc to keep freed array memory for reuse instead of returning it to the OS.

    A training step allocates and frees the same large activation buffers every
    time. By default glibc serves blocks over 128 KiB with mmap and unmaps them
    on free, so every step pays page faults to map and zero that memory again;
    on a small GPT that was a quarter of the step. Serving every block from the
    heap (no mmap at all: a threshold of 32 MiB, glibc's maximum, still left
    the 400 MB logits of a 50257-token vocabulary to mmap, and their pages to
    be faulted in again each step, about an eighth of a mini step) and
    trimming the heap only when 2 GiB lie free at its top keeps them, which
    is what PyTorch's caching allocator achieves its own way. Linux with
    glibc only. Returns whether the settings were applied.

    tinytensor applies it by itself, once, when the first tensor is made
    (importing changes nothing), so a plain training script is as fast as
    train.py. The setting is process-wide: every allocation of the process
    (NumPy's outside tinytensor, other libraries) is served the same way, and
    the process keeps up to 2 GiB of freed memory. Set TINYTENSOR_TUNE_MALLOC=0
    in the environment to leave malloc alone (this function then does nothing).
    """
    import ctypes
    import ctypes.util
    import os

    if os.environ.get("TINYTENSOR_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))  # (an int: 2 GiB at most)
