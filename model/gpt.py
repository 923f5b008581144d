"""The network: a decoder-only transformer.

token embedding (+ learned or sinusoidal positions) -> num_blocks x [pre-LayerNorm causal self-attention,
pre-LayerNorm feed-forward] -> final LayerNorm -> output head (tied to the token embedding unless configured
otherwise). Rotary positions, the default, rotate queries and keys inside attention instead.
Reads one ModelConfig and nothing else.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from model.attention import apply_rotary, causal_attention, fused_attention_applies
from model.bf16 import Linear, relu_squared_mlp
from model.config import ConfigError, ModelConfig
from model.kv_cache import KVCache


def rotary_frequencies(head_size: int, base: float) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size))  # (hs/2,)


def rotary_table(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Unit complex numbers e^(i * position * frequency): (..., T) positions -> (..., T, hs/2) complex64."""
    angles = positions.to(torch.float32)[..., None] * inv_freq
    return torch.polar(torch.ones_like(angles), angles)


def sinusoidal_table(length: int, d_model: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: d_model // 2])
    return table  # (length, d_model)


def _affine(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (B, in) @ weight_t (in, out) (+ bias): a linear layer for rows, as one kernel."""
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.qk_norm = config.qk_norm
        self.scale = config.qk_gain / math.sqrt(config.head_size)
        self.dropout = config.dropout
        self.qkv = Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout) if config.dropout > 0 else None

    def forward(self, x, rope=None, cache: KVCache | None = None, layer: int = 0):
        dropout = self.dropout if self.training else 0.0
        if cache is None and fused_attention_applies(x, dropout):  # see attention.py
            y = causal_attention(self.qkv(x), self.num_heads, self.scale, self.qk_norm,
                                 None if rope is None else rope[:, 0, 0])
        else:
            y = self._attend(self.qkv(x), rope, cache, layer, dropout)
        y = self.proj(y)
        return y if self.resid_drop is None else self.resid_drop(y)

    def _attend(self, qkv, rope, cache: KVCache | None, layer: int, dropout: float) -> torch.Tensor:
        """qkv (B, T, 3C) -> (B, T, C) through scaled_dot_product_attention, with or without the KV cache."""
        B, T, C3 = qkv.shape
        C = C3 // 3
        qkv = qkv.view(B, T, 3, self.num_heads, C // self.num_heads)  # (B, T, 3, nh, hs)
        qk, v = qkv[:, :, :2], qkv[:, :, 2]
        if self.qk_norm:  # LayerNorm without weights: one fused kernel on the CPU, a third of RMSNorm's time
            qk = F.layer_norm(qk, (qk.size(-1),))
        if rope is not None:
            qk = apply_rotary(qk, rope)  # rope broadcasts as (B or 1, T, 1, 1, hs/2)
        q, k = qk.unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=self.scale)
        else:
            k, v, mask, causal = cache.attend(layer, k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=self.scale)
        return y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.d_model
        self.fc = Linear(config.d_model, hidden, bias=config.bias)
        self.proj = Linear(hidden, config.d_model, bias=config.bias)
        self.relu2 = config.activation == "relu2"
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else None

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        if self.relu2:
            h = F.relu(h)
            return h * h  # on the CPU, a product back-propagates faster than square() or pow(2)
        return F.gelu(h)  # exact: on the CPU faster than the tanh approximation at these sizes

    def forward(self, x):
        h = relu_squared_mlp(x, self.fc, self.proj) if self.relu2 else None
        if h is None:
            h = self.proj(self.activate(self.fc(x)))  # (B, T, mlp_ratio * C) inside
        return h if self.drop is None else self.drop(h)


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = FeedForward(config)

    def forward(self, x, rope=None, cache=None, layer=0):
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
            self.register_buffer("rope", rope[:, None, None], persistent=False)  # (T, 1, 1, hs/2)
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else None
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

    def _rope(self, length: int) -> torch.Tensor:
        """The rotary table for positions 0 .. length-1 at least; grown on demand when decoding runs long."""
        if length > self.rope.size(0):
            positions = torch.arange(max(length, 2 * self.rope.size(0)), device=self.rope.device)
            self.rope = rotary_table(positions, self.inv_freq)[:, None, None]
        return self.rope

    def use_bf16_matmuls(self, enabled: bool = True) -> None:
        """Run the blocks' matrix products in bfloat16 while training (see bf16.py); for CPUs with AVX512-BF16."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.bf16_matmul = enabled

    def num_parameters(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel() + (self.pos_emb.weight.numel() if self.pos_emb is not None else 0)
        return n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False):
        """idx (B, T) token ids -> logits (B, T, V) (or (B, 1, V) with last_only), and the mean loss if targets."""
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
            if positions is None:
                rope = self._rope(start + T)[start:start + T]  # (T, 1, 1, hs/2), broadcast over batch and heads
            else:
                rope = rotary_table(positions, self.inv_freq)[:, :, None, None]  # (B, T, 1, 1, hs/2)
        elif self.config.positions == "learned":
            x = x + (self.pos_emb.weight[start:start + T] if positions is None else self.pos_emb(positions))
        else:
            x = x + (self.pos_table[start:start + T] if positions is None else self.pos_table[positions])
        if self.drop is not None:
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
        """One new token per row, idx (B, 1), through the cache -> next-token logits (B, V). Call it under
        torch.inference_mode().

        The same network as forward() (tests hold them equal), written as plain tensor operations over weights
        gathered once per cache: at one token per pass, module calls and attribute look-ups would otherwise
        take a third of the time on a CPU. Rows padded differently take forward(), which builds the masks."""
        if cache.padded or cache.length == 0:
            return self.forward(idx, cache=cache, last_only=True)[0][:, -1]
        if cache.plan is None:
            cache.plan = self._decode_plan()
        C, nh, hs, qk_norm, scale, layers, ln_f, head_t = cache.plan
        B = idx.size(0)
        start, _ = cache.begin(1)
        # Rows of (B, C), not (B, 1, C): a product of a matrix with a transposed weight is one kernel, where a
        # linear layer over a 3-D input reshapes around it.
        x = self.tok_emb.weight[idx[:, 0]]  # (B, C)
        rope = None
        if self.config.positions == "rotary":
            rope = self._rope(start + 1)[start]  # (1, 1, hs/2)
        elif self.pos_emb is not None:
            x = x + self.pos_emb.weight[start]
        else:
            x = x + self.pos_table[start]
        for i, (ln1, qkv_t, qkv_b, proj_t, proj_b, ln2, fc_t, fc_b, out_t, out_b, activate) in enumerate(layers):
            qkv = _affine(F.layer_norm(x, (C,), *ln1), qkv_t, qkv_b).view(B, 3, nh, hs)
            qk = qkv[:, :2]
            if qk_norm:
                qk = F.layer_norm(qk, (hs,))
            if rope is not None:
                qk = apply_rotary(qk, rope)  # (B, 2, nh, hs)
            keys, values, _, _ = cache.attend(i, qk[:, 1, :, None], qkv[:, 2, :, None])  # (B, nh, n, hs)
            y = F.scaled_dot_product_attention(qk[:, 0, :, None], keys, values, scale=scale)  # (B, nh, 1, hs)
            x = x + _affine(y.view(B, C), proj_t, proj_b)
            h = activate(_affine(F.layer_norm(x, (C,), *ln2), fc_t, fc_b))  # (B, 4C)
            x = x + _affine(h, out_t, out_b)
        cache.end(1)
        return _affine(F.layer_norm(x, (C,), *ln_f), head_t, None)  # (B, V)

    def _decode_plan(self) -> tuple:
        """The weights decode() reads, gathered once per cache; matrices as transposed views (no copies)."""
        c = self.config
        layers = [((b.ln1.weight, b.ln1.bias), b.attn.qkv.weight.t(), b.attn.qkv.bias, b.attn.proj.weight.t(),
                   b.attn.proj.bias, (b.ln2.weight, b.ln2.bias), b.mlp.fc.weight.t(), b.mlp.fc.bias,
                   b.mlp.proj.weight.t(), b.mlp.proj.bias, b.mlp.activate) for b in self.blocks]
        scale = c.qk_gain / math.sqrt(c.head_size)
        ln_f = (self.ln_f.weight, self.ln_f.bias)
        return c.d_model, c.num_heads, c.head_size, c.qk_norm, scale, layers, ln_f, self.head.weight.t()

    def new_cache(self, batch: int, device=None, dtype=torch.float32) -> KVCache:
        c = self.config
        device = device or self.tok_emb.weight.device
        return KVCache(c.num_blocks, batch, c.num_heads, c.context_length, c.head_size, device, dtype,
                       ring=c.positions == "rotary")
