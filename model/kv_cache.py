"""The key/value cache for incremental decoding: a fixed-capacity buffer per layer, padding-aware.

One forward pass through the network with a cache goes:
    cache.begin(T)            -> where the T new tokens sit (a shared offset, or per-row positions)
    cache.attend(layer, k, v) -> keys, values and mask each attention layer attends over (once per layer)
    cache.end(T)              -> the T tokens now count as written

Rows of a batch may hold prompts of different lengths: they are left-padded, and the pad slots are masked out.
With rotary positions attention depends only on token distances, so once the buffer is full it keeps going as a
ring (slot = step % capacity): the oldest token is overwritten and the window slides at no cost. With absolute
positions (learned, sinusoidal) a full cache must instead be refilled from the recent tokens (see generate.py).
Decoding costs one small kernel per step on the common path (one row, or rows without padding), which is what
keeps a CPU at thousands of tokens per second.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_blocks: int, batch: int, num_heads: int, capacity: int, head_size: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, ring: bool = True):
        shape = (batch, num_heads, capacity, head_size)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_blocks)]  # (B, nh, cap, hs)
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_blocks)]
        self.valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)  # (B, cap) real tokens
        self.pad = torch.zeros(batch, dtype=torch.long, device=device)  # (B,) left padding of the prefill
        self.capacity = capacity
        self.ring = ring
        self.length = 0  # tokens written per row so far (pads included), may exceed capacity in ring mode
        self.padded = False
        self._prefill = True
        self._slot = self._n = 0
        self._mask: torch.Tensor | None = None
        self.plan: tuple | None = None  # the network's weights gathered for GPT.decode, for this cache's life

    @property
    def full(self) -> bool:
        return self.length >= self.capacity

    def reset(self, pad: torch.Tensor | None = None) -> None:
        """Empty the cache; `pad` (B,) gives each row's left padding for the next prefill."""
        self.length = 0
        self.pad = torch.zeros_like(self.pad) if pad is None else pad.to(self.pad.device)
        self.padded = bool(self.pad.any())
        if self.padded:
            self.valid.zero_()

    def begin(self, T: int) -> tuple[int, torch.Tensor | None]:
        """Prepare a pass over T new tokens. Returns (start, positions): without padding every row's tokens sit
        at start .. start+T-1 and positions is None; with padding, positions (B, T) gives each row's own."""
        cap = self.capacity
        self._prefill = self.length == 0
        if self._prefill:
            if T > cap:
                raise ValueError(f"prefill of {T} tokens exceeds the cache capacity {cap}")
            self._mask = None
            if not self.padded:
                return 0, None
            dev = self.valid.device
            real = torch.arange(T, device=dev)[None, :] >= self.pad[:, None]  # (B, T)
            self.valid[:, :T] = real
            causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
            # A pad query may see itself, so that its softmax row is never empty (its output is unused).
            self._mask = ((causal & real[:, None, :]) | torch.eye(T, dtype=torch.bool, device=dev))[:, None]
            return 0, (torch.arange(T, device=dev)[None, :] - self.pad[:, None]).clamp(min=0)
        if T != 1:
            raise ValueError("after the prefill the cache takes one token per pass")
        if self.full and not self.ring:
            raise ValueError("cache is full; refill it from the recent tokens")
        self._slot = self.length % cap
        self._n = min(self.length + 1, cap)
        if not self.padded:
            return self.length, None
        self.valid[:, self._slot] = True
        self._mask = self.valid[:, None, None, :self._n]  # (B, 1, 1, n)
        return self.length, (self.length - self.pad)[:, None]  # (B, 1)

    def attend(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, nh, T, hs) of this layer; return (keys, values, mask, is_causal) to attend over."""
        kc, vc = self.k[layer], self.v[layer]
        if self._prefill:
            T = k.size(2)
            kc[:, :, :T] = k
            vc[:, :, :T] = v
            return k, v, self._mask, self._mask is None
        kc.narrow(2, self._slot, 1).copy_(k)
        vc.narrow(2, self._slot, 1).copy_(v)
        if self._n < self.capacity:
            kc, vc = kc.narrow(2, 0, self._n), vc.narrow(2, 0, self._n)
        # Decoding needs no causal mask: every cached token is in the past, and attention ignores slot order.
        return kc, vc, self._mask, False

    def end(self, T: int) -> None:
        self.length += T
