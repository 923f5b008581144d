"""Where the tensors live: the best available device, a sensible CPU thread count, the fastest precision."""

from __future__ import annotations

import contextlib
import ctypes
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


# mallopt(3) parameters of glibc.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory a training step frees, for the next step to reuse.

    A step allocates and frees the same few hundred activation and gradient buffers every time, many of them above
    glibc's threshold for serving an allocation with its own mmap. Each such buffer is then mapped afresh, its pages
    faulted in and zeroed by the kernel, and unmapped at the end of the step: several megabytes of page faults per
    step, measured as a third of a cpu-baby step's system time. Serving them from the heap (mmap only past 32 MiB)
    and keeping the heap's top (trim past 1 GiB) makes them plain reuse. Meant for a process that trains or
    evaluates: its memory then stays at its high-water mark. Returns False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, 32 * 1024 * 1024), (_M_TRIM_THRESHOLD, 1024 * 1024 * 1024), (_M_TOP_PAD, 64 * 1024 * 1024)))


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
