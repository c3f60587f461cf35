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
    on a small GPT that was a quarter of the step. Raising the mmap threshold
    to its maximum (32 MiB) and the trim threshold keeps those blocks in the
    heap, which is what PyTorch's caching allocator achieves its own way.
    Linux with glibc only; set TINYTENSOR_TUNE_MALLOC=0 to leave malloc alone.
    Returns whether the settings were applied.
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
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 * 1024 * 1024)) and bool(mallopt(m_trim_threshold, 1024 ** 3))
