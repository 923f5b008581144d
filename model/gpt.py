"""The network: a decoder-only transformer, as plain as it can be written.

token embedding (+ learned or sinusoidal positions) -> num_blocks x [pre-LayerNorm causal self-attention,
pre-LayerNorm feed-forward] -> final LayerNorm -> output head (tied to the token embedding unless configured
otherwise). Rotary positions, the default, rotate queries and keys inside attention instead.

Reads one ModelConfig and nothing else. This is the model's definition: model/fast/ holds faster paths for some
devices and shapes, each held equal to this one by a test, and the model is correct without them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from model.config import ConfigError, ModelConfig
from model.kv_cache import KVCache


def rotary_frequencies(head_size: int, base: float) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size))  # (hs/2,)


def rotary_table(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Unit complex numbers e^(i * position * frequency): (..., T) positions -> (..., T, hs/2) complex64."""
    angles = positions.to(torch.float32)[..., None] * inv_freq
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate each pair of features (2i, 2i+1) of x (..., hs) by its angle: one complex multiplication by the unit
    complex numbers `rope` (..., hs/2), which broadcast against x's leading dimensions."""
    if x.dtype in (torch.bfloat16, torch.float16):  # complex products need float32 at least (under autocast)
        return apply_rotary(x.float(), rope).type_as(x)
    return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * rope).flatten(-2)


def sinusoidal_table(length: int, d_model: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: d_model // 2])
    return table  # (length, d_model)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.qk_norm = config.qk_norm
        self.scale = config.qk_gain / math.sqrt(config.head_size)
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, C // self.num_heads).unbind(2)  # (B, T, nh, hs) each
        if self.qk_norm:  # a LayerNorm without weights, per head
            q, k = F.layer_norm(q, (q.size(-1),)), F.layer_norm(k, (k.size(-1),))
        if rope is not None:  # rope (T, 1, hs/2), or (B, T, 1, hs/2) when rows sit at positions of their own
            q, k = apply_rotary(q, rope), apply_rotary(k, rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        if cache is None:
            dropout = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=self.scale)
        else:  # keys and values of the earlier tokens come from the cache, which masks what a row may not see
            k, v, mask, causal = cache.attend(layer, k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=self.scale)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_drop(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.d_model
        self.fc = nn.Linear(config.d_model, hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, config.d_model, bias=config.bias)
        self.relu2 = config.activation == "relu2"
        self.approximate = "tanh" if config.activation == "gelu_tanh" else "none"
        self.drop = nn.Dropout(config.dropout)

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        if self.relu2:
            h = F.relu(h)
            return h * h  # on the CPU, a product back-propagates faster than square() or pow(2)
        return F.gelu(h, approximate=self.approximate)  # exact by default: on the CPU faster than tanh here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.activate(self.fc(x))))  # (B, T, mlp_ratio * C) inside


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = FeedForward(config)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope, cache, layer)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.vocab_size is None:
            raise ConfigError("vocab_size", "must be set (from the tokenizer) before building the network")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context_length, config.d_model) if config.positions == "learned" else None
        if config.positions == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(config.context_length, config.d_model), persistent=False)
        if config.positions == "rotary":
            inv_freq = rotary_frequencies(config.head_size, config.rope_base)
            self.register_buffer("inv_freq", inv_freq, persistent=False)
            rope = rotary_table(torch.arange(config.context_length), inv_freq)  # (context_length, hs/2)
            self.register_buffer("rope", rope[:, None], persistent=False)  # (T, 1, hs/2): one angle for every head
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_blocks))
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # residual projections: scaled down so the stream doesn't grow with depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.num_blocks))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel() + (self.pos_emb.weight.numel() if self.pos_emb is not None else 0)
        return n

    def rotary(self, start: int, length: int, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Rotations for positions start .. start+length-1 -> (T, 1, hs/2), or for `positions` (B, T) -> (B, T, 1,
        hs/2). The table grows on demand when decoding runs past the context (the cache then slides as a ring)."""
        if positions is not None:
            return rotary_table(positions, self.inv_freq)[:, :, None]
        if start + length > self.rope.size(0):
            longer = torch.arange(max(start + length, 2 * self.rope.size(0)), device=self.rope.device)
            self.rope = rotary_table(longer, self.inv_freq)[:, None]
        return self.rope[start:start + length]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, V) (or (B, 1, V) with last_only), and the mean loss if targets.

        With a cache, the T tokens follow those already in it; rows padded on the left get positions of their own."""
        B, T = idx.shape
        start, positions = 0, None  # positions (B, T) only when rows are padded differently
        if cache is None:
            if T > self.config.context_length:
                raise ValueError(f"sequence of {T} tokens exceeds context_length {self.config.context_length}")
        else:
            start, positions = cache.begin(T)
        x = self.tok_emb(idx)  # (B, T, C)
        rope = None
        if self.config.positions == "rotary":
            rope = self.rotary(start, T, positions)
        elif self.config.positions == "learned":
            x = x + (self.pos_emb.weight[start:start + T] if positions is None else self.pos_emb(positions))
        else:
            x = x + (self.pos_table[start:start + T] if positions is None else self.pos_table[positions])
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, cache, i)
        if cache is not None:
            cache.end(T)
        x = self.ln_f(x)
        if targets is None:
            return self.head(x[:, -1:] if last_only else x), None
        logits = self.head(x).float()  # (B, T, V); float so the loss is exact under autocast
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def decode(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One new token per row, idx (B, 1), after the tokens in the cache -> next-token logits (B, V)."""
        return self.forward(idx, cache=cache, last_only=True)[0][:, -1]

    def new_cache(self, batch: int, device=None, dtype=torch.float32) -> KVCache:
        c = self.config
        device = device or self.tok_emb.weight.device
        return KVCache(c.num_blocks, batch, c.num_heads, c.context_length, c.head_size, device, dtype,
                       ring=c.positions == "rotary")
