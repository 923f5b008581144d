"""The key/value cache for incremental decoding: a fixed-capacity buffer per layer, padding-aware.

One forward pass through the network with a cache goes:
    cache.begin(T)            -> positions of the T new tokens, per row
    cache.attend(layer, k, v) -> keys, values and mask each attention layer attends over (once per layer)
    cache.end()               -> the T tokens now count as written

Rows of a batch may hold prompts of different lengths: they are left-padded, and the pad slots are masked out.
With rotary positions attention depends only on token distances, so once the buffer is full it keeps going as a
ring (slot = step % capacity): the oldest token is overwritten and the window slides at no cost. With absolute
positions (learned, sinusoidal) a full cache must instead be refilled from the recent tokens (see generate.py).
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_blocks: int, batch: int, num_heads: int, capacity: int, head_size: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, ring: bool = True):
        shape = (num_blocks, batch, num_heads, capacity, head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nh, cap, hs)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)  # (B, cap) real tokens
        self.pad = torch.zeros(batch, dtype=torch.long, device=device)  # (B,) left padding of the prefill
        self.capacity = capacity
        self.ring = ring
        self.length = 0  # tokens written per row so far (pads included), may exceed capacity in ring mode
        self._padded = False
        self._call: tuple | None = None

    @property
    def full(self) -> bool:
        return self.length >= self.capacity

    def reset(self, pad: torch.Tensor | None = None) -> None:
        """Empty the cache; `pad` (B,) gives each row's left padding for the next prefill."""
        self.length = 0
        self.valid.zero_()
        self.pad = torch.zeros_like(self.pad) if pad is None else pad.to(self.pad.device)
        self._padded = bool(self.pad.any())

    def begin(self, T: int) -> torch.Tensor:
        """Prepare a pass over T new tokens; returns their positions (B, T) for the position encoding."""
        B, cap = self.valid.shape
        dev = self.valid.device
        if self.length == 0:
            if T > cap:
                raise ValueError(f"prefill of {T} tokens exceeds the cache capacity {cap}")
            steps = torch.arange(T, device=dev)
            real = steps[None, :] >= self.pad[:, None]  # (B, T)
            self.valid[:, :T] = real
            mask = None
            if self._padded:
                causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
                # A pad query may see itself, so that its softmax row is never empty (its output is unused).
                mask = (causal & real[:, None, :]) | torch.eye(T, dtype=torch.bool, device=dev)
                mask = mask[:, None]  # (B, 1, T, T)
            self._call = ("prefill", T, mask)
        else:
            if T != 1:
                raise ValueError("after the prefill the cache takes one token per pass")
            if self.full and not self.ring:
                raise ValueError("cache is full; refill it from the recent tokens")
            slot = self.length % cap
            self.valid[:, slot] = True
            n = min(self.length + 1, cap)
            mask = self.valid[:, None, None, :n] if self._padded else None  # (B, 1, 1, n)
            self._call = ("decode", slot, n, mask)
        steps = torch.arange(self.length, self.length + T, device=dev)
        return (steps[None, :] - self.pad[:, None]).clamp(min=0)  # (B, T)

    def attend(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, nh, T, hs) of this layer; return (keys, values, mask, is_causal) to attend over."""
        call = self._call
        if call[0] == "prefill":
            T, mask = call[1], call[2]
            self.k[layer, :, :, :T] = k
            self.v[layer, :, :, :T] = v
            return k, v, mask, mask is None
        _, slot, n, mask = call
        self.k[layer, :, :, slot] = k[:, :, 0]
        self.v[layer, :, :, slot] = v[:, :, 0]
        # Decoding needs no causal mask: every cached token is in the past, and attention ignores slot order.
        return self.k[layer, :, :, :n], self.v[layer, :, :, :n], mask, False

    def end(self, T: int) -> None:
        self.length += T
        self._call = None
