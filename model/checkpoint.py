"""Checkpoints as bytes: the library does no I/O, the agents store the bytes (atomically) wherever they like.

Layout: MAGIC (8 bytes) | SHA-256 of the payload (32 bytes) | payload length (8 bytes, big-endian) | payload,
the payload being torch.save() of the state dict. unpack_checkpoint verifies all of it before unpickling, and
loads with weights_only=True, so a checkpoint can carry tensors and plain values but never code.
"""

from __future__ import annotations

import hashlib
import io
import struct
from typing import Any

import torch

from model.config import model_config_from_dict
from model.gpt import GPT
from model.tokenizers import Tokenizer, tokenizer_from_json

MAGIC = b"LFZCKPT1"
_HEADER = struct.Struct(">8s32sQ")


class CorruptCheckpoint(ValueError):
    """The bytes are not a complete, intact checkpoint (truncated, altered, or not a checkpoint at all)."""


def pack_checkpoint(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    return _HEADER.pack(MAGIC, hashlib.sha256(payload).digest(), len(payload)) + payload


def unpack_checkpoint(data: bytes) -> dict[str, Any]:
    if len(data) < _HEADER.size:
        raise CorruptCheckpoint(f"checkpoint is truncated: {len(data)} bytes, shorter than its header")
    magic, digest, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptCheckpoint("not a checkpoint: wrong magic bytes")
    payload = memoryview(data)[_HEADER.size:]
    if len(payload) != length:
        raise CorruptCheckpoint(f"checkpoint is truncated: payload of {len(payload)} bytes, expected {length}")
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptCheckpoint("checkpoint checksum mismatch: the bytes were altered")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # intact bytes that still do not unpickle: written by something else
        raise CorruptCheckpoint(f"checkpoint payload does not load: {e}") from e


def load_model(state: dict[str, Any], device: torch.device | str | None = None) -> tuple[GPT, Tokenizer]:
    """The network (in eval mode, on `device` or the CPU) and its tokenizer, ready for inference."""
    if state.get("tokenizer") is None:
        raise ValueError("checkpoint carries no tokenizer")
    model = GPT(model_config_from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer_from_json(state["tokenizer"])
