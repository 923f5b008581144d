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


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast where it pays (CUDA with bf16 support, or when asked for); a no-op context otherwise."""
    use_bf16 = precision == "bf16" or (
        precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
