"""GPT-2 small's training step on a GPU, ours (CuPy) against PyTorch eager, and a real model's generation.

Training: one full step (forward, loss, backward, AdamW) of GPT-2 small (124M, float32),
batch 8 x 1024, timed on the device for our model and for the same model in plain
PyTorch eager (bench/torch_gpt.py: same weights, explicit softmax attention, tanh GELU,
no torch.compile). Printed per side: ms per step, tokens/s, MFU against the device's
float32 peak (its data sheet's figure when the device is known, else the float32 matmul
rate measured in this run), and peak device memory (CuPy's memory-pool high-water mark,
torch.cuda.max_memory_allocated). TF32 stays off on both sides: the comparison is float32.

Generation: SmolLM2-135M-Instruct from ../shared/data/models/ (when it loads: a .gguf
needs GGUF support and the `gguf` package), prompt and generation tokens/s, against
transformers on the same device reading the same weights (exported to a Hugging Face
folder by our own save_pretrained), when it is installed.

    python bench/gpu.py                          # on the GPU
    BENCH_QUICK=1 python bench/gpu.py            # seconds: a tiny GPT and a tiny Llama, same code path
    PYTHONPATH=../shared/tools/strict-cupy BENCH_QUICK=1 python bench/gpu.py   # the cuda path on a CPU

Without a real GPU (CuPy's stand-in, or no CuPy: then --device cpu), PyTorch's half is
skipped unless torch sees CUDA, and the MFU is against the measured matmul rate.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path[0] = str(Path(__file__).resolve().parents[1])   # the repo, not bench/, first
sys.path.insert(1, str(Path(__file__).resolve().parent))  # torch_gpt

import numpy as np  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402
from tinytensor import optim  # noqa: E402
from tinytensor.backend import to_device  # noqa: E402

from bench_quick import QUICK  # noqa: E402  (bench/bench_quick.py: bench/ is on the path)
SMOLLM = Path(__file__).resolve().parents[2] / "shared" / "data" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
# float32 (non-tensor-core) peaks from the vendors' data sheets, FLOP/s
FP32_PEAK = {"H200": 67e12, "H100": 67e12, "A100": 19.5e12, "L40S": 91.6e12, "L4": 30.3e12, "A10": 31.2e12,
             "RTX 4090": 82.6e12, "V100": 15.7e12, "T4": 8.1e12}
TARGET_TIME, TARGET_MEMORY, TARGET_GENERATION = 1.5, 1.3, 1.0
WEIGHT_DECAY, LR = 0.1, 3e-4


class Device:
    """Synchronisation, memory accounting and naming for our side on `name` ("cuda" or "cpu")."""

    def __init__(self, name: str):
        self.name = name
        self.cupy = None
        if name == "cuda":
            import cupy
            self.cupy = cupy

    def sync(self) -> None:
        if self.cupy is not None:
            self.cupy.cuda.Device().synchronize()

    def reset_memory(self) -> None:
        if self.cupy is not None:
            self.cupy.get_default_memory_pool().free_all_blocks()

    def peak_memory(self) -> int | None:
        """Bytes CuPy's pool holds: it keeps every block it was given until free_all_blocks,
        so after reset_memory and some steps this is the steps' high-water mark."""
        return None if self.cupy is None else int(self.cupy.get_default_memory_pool().total_bytes())

    def label(self) -> str:
        if self.cupy is None:
            return "cpu (NumPy)"
        try:
            props = self.cupy.cuda.runtime.getDeviceProperties(0)
            name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        except Exception:   # the CPU stand-in has no device properties
            name = "CuPy without a device properties call (a stand-in?)"
        return name

    def peak_flops(self, measured: float) -> tuple[float, str]:
        label = self.label()
        for key, flops in FP32_PEAK.items():
            if key in label:
                return flops, f"{key} data sheet, float32"
        return measured, "the float32 matmul rate measured here"


def timed(fn: Callable[[], Any], sync: Callable[[], None], reps: int) -> float:
    """Median seconds of `fn` over `reps` runs after one warm-up, the device waited for each time."""
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_rate(dev: Device, n: int) -> float:
    xp = dev.cupy if dev.cupy is not None else np
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    return 2 * n ** 3 / timed(lambda: a @ a, dev.sync, 3)


def our_step(model: GPT, x: np.ndarray, y: np.ndarray) -> Callable[[], float]:
    opt = optim.AdamW(optim.param_groups_for_weight_decay(model, WEIGHT_DECAY), lr=LR)
    xd, yd = to_device(x, model.wte.weight.device), to_device(y, model.wte.weight.device)

    def step() -> float:
        _, loss = model(xd, targets=yd)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()   # one host sync, as train.py's log line has

    return step


def training(dev: Device, cfg: GPTConfig, B: int, steps: int, with_torch: bool) -> None:
    tt.manual_seed(0)
    model = GPT(cfg)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))
    y = rng.integers(0, cfg.vocab_size, (B, cfg.block_size))
    tokens, flops = B * cfg.block_size, model.flops_per_token() * B * cfg.block_size
    measured = matmul_rate(dev, 512 if QUICK else 8192)
    peak, source = dev.peak_flops(measured)
    print(f"device: {dev.label()}; float32 matmul here {measured / 1e12:.2f} TFLOP/s; MFU is against "
          f"{peak / 1e12:.2f} TFLOP/s ({source})")
    print(f"GPT-2 {'(quick: tiny)' if QUICK else 'small'}: {model.num_parameters() / 1e6:.1f}M parameters, "
          f"batch {B} x {cfg.block_size}, float32, {steps} timed steps (median)")
    rows = []
    if with_torch:   # first, from the same initial weights our model holds now
        import torch
        import torch_gpt
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.cuda.reset_peak_memory_stats()
        ref = torch_gpt.train_step(model, x, y, WEIGHT_DECAY, LR, device="cuda")
        ref_loss = ref()
        t = timed(ref, torch.cuda.synchronize, steps)
        rows.append(("PyTorch eager", t, int(torch.cuda.max_memory_allocated()), ref_loss))
        del ref
        torch.cuda.empty_cache()
    dev.reset_memory()
    model.to(dev.name)
    step = our_step(model, x, y)
    loss = step()
    t = timed(step, dev.sync, steps)
    rows.insert(0, ("tinytensor", t, dev.peak_memory(), loss))
    print(f"{'':14} {'ms/step':>9} {'tokens/s':>10} {'MFU':>6} {'peak MiB':>9} {'first loss':>10}")
    for name, t, mem, first in rows:
        mib = f"{mem / 2**20:9.0f}" if mem is not None else f"{'-':>9}"
        print(f"{name:14} {t * 1e3:9.1f} {tokens / t:10.0f} {flops / t / peak:6.1%} {mib} {first:10.4f}")
    if len(rows) == 2:
        (_, ours, our_mem, l0), (_, theirs, their_mem, l1) = rows
        assert abs(l0 - l1) <= 1e-3 * abs(l1), f"first losses differ: ours {l0}, torch {l1}"
        memory = f"{our_mem / their_mem:.2f}x" if our_mem and their_mem else "-"
        print(f"ours / PyTorch: time {ours / theirs:.2f}x (target <= {TARGET_TIME}x), "
              f"peak memory {memory} (target <= {TARGET_MEMORY}x)")
    else:
        print("PyTorch's half skipped: torch is not installed or sees no CUDA device")


def real_model() -> tuple[GPT, str] | None:
    """SmolLM2 from the shared GGUF, or in quick mode a tiny random Llama-shaped model."""
    if QUICK:
        tt.manual_seed(0)
        cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, pos="rope",
                        mlp="swiglu", norm="rmsnorm", bias=False, tie_embeddings=True)
        return GPT(cfg), "tiny Llama-shaped (quick, random weights)"
    if not SMOLLM.is_file():
        print(f"generation skipped: {SMOLLM} is absent")
        return None
    try:
        return GPT.from_pretrained(SMOLLM), SMOLLM.name
    except Exception as e:   # GGUF loading, or its optional `gguf` package, may be missing
        print(f"generation skipped: {SMOLLM.name} does not load here ({type(e).__name__}: {e})")
        return None


def generation(dev: Device, prompt_len: int, new_tokens: int) -> None:
    loaded = real_model()
    if loaded is None:
        return
    model, what = loaded
    model.to(dev.name)
    prompt = np.random.default_rng(0).integers(0, model.config.vocab_size, (1, prompt_len))
    prefill = timed(lambda: model.generate(prompt, 1, temperature=0), dev.sync, 3)
    gen = timed(lambda: model.generate(prompt, new_tokens, temperature=0), dev.sync, 1)
    ours = (prompt_len / prefill, new_tokens / max(gen - prefill, 1e-9))
    print(f"generation, {what}: prompt {prompt_len} tokens, {new_tokens} new, greedy, batch 1")
    print(f"  tinytensor   prompt {ours[0]:9.0f} tokens/s   generation {ours[1]:7.1f} tokens/s")
    theirs = transformers_rates(model, prompt, new_tokens) if not QUICK else None
    if theirs is None:
        print("  transformers skipped (quick mode, not installed, or no CUDA device for torch)")
        return
    print(f"  transformers prompt {theirs[0]:9.0f} tokens/s   generation {theirs[1]:7.1f} tokens/s")
    print(f"  ours / transformers: generation {ours[1] / theirs[1]:.2f}x (target >= {TARGET_GENERATION}x)")


def transformers_rates(model: GPT, prompt: np.ndarray, new_tokens: int) -> tuple[float, float] | None:
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    with tempfile.TemporaryDirectory() as folder:
        model.to("cpu").save_pretrained(folder)   # the same weights, as a Hugging Face folder
        hf = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).to("cuda").eval()
    ids = torch.from_numpy(prompt).to("cuda")
    kwargs = dict(do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)

    def run(n: int) -> None:
        with torch.no_grad():
            hf.generate(ids, max_new_tokens=n, min_new_tokens=n, **kwargs)

    prefill = timed(lambda: run(1), torch.cuda.synchronize, 3)
    gen = timed(lambda: run(new_tokens), torch.cuda.synchronize, 1)
    return prompt.shape[1] / prefill, new_tokens / max(gen - prefill, 1e-9)


def torch_sees_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, choices=["cuda", "cpu"],
                    help="default: cuda when CuPy is importable (or its stand-in), else cpu")
    ap.add_argument("--steps", type=int, default=2 if QUICK else 10)
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it sees a GPU")
    ap.add_argument("--no-generation", action="store_true")
    args = ap.parse_args()
    device = args.device
    if device is None:
        try:
            import cupy  # noqa: F401
            device = "cuda"
        except ImportError:
            device = "cpu"
            print("no CuPy here: our side runs on the cpu")
    dev = Device(device)
    if QUICK:
        cfg, B = GPTConfig.preset("nano", vocab_size=65, block_size=32, n_layer=2), 2
    else:
        cfg, B = GPTConfig.preset("gpt2"), 8
    training(dev, cfg, B, args.steps, with_torch=torch_sees_cuda() and not args.no_torch)
    if not args.no_generation:
        generation(dev, 8 if QUICK else 128, 8 if QUICK else 128)


if __name__ == "__main__":
    main()
