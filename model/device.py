"""Where the tensors live: the best available device, a sensible CPU thread count, the fastest precision."""

from __future__ import annotations

import contextlib
import os

import torch


def pick_device(preference: str | None = None) -> torch.device:
    """`preference` ("cpu", "cuda", "cuda:1", ...) wins when given; otherwise CUDA when present, else the CPU."""
    if preference:
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to `n`, or to the cores this process may run on. Returns the count."""
    n = n or available_cores()
    if n < 1:
        raise ValueError(f"thread count must be positive, got {n}")
    torch.set_num_threads(n)
    return n


def cpu_supports_bf16() -> bool:
    """Whether oneDNN has fast bf16 matrix products here (AVX512-BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on accelerators (by default where supported); a no-op context on the CPU, where bf16
    element-wise kernels are slower than float32 ones (see bf16_matmuls instead)."""
    if device.type == "cpu" or precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16" or (device.type != "cuda" or torch.cuda.is_bf16_supported()):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bf16_matmuls(device: torch.device, precision: str = "auto") -> bool:
    """Whether training on this device should run its matrix products in bf16 and the rest in float32."""
    return device.type == "cpu" and (precision == "bf16" or (precision == "auto" and cpu_supports_bf16()))
