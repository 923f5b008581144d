"""Causal self-attention over short contexts on a CPU, as one autograd function (a fast path: see model/fast).

`scaled_dot_product_attention` is the attention of the network everywhere else (CUDA, generation with a KV cache,
long contexts). Its CPU kernel is a flash-attention kernel blocked for long sequences; at the lengths a CPU trains
on (context 64, head size 32) it spends most of its time on that machinery, and the query/key norm and rotary
positions around it add a dozen autograd nodes and strided copies of their own. Here the whole sublayer, from
the qkv projection's output to the heads side by side again, is one node:

    forward:  qkv (B, T, 3C) -> heads first (3, B, nh, T, hs) in one copy -> norm q and k -> rotate q and k
              -> S = q k^T * scale + causal mask -> P = softmax(S) -> y = P v -> (B, T, C)
    backward: dv = P^T dy;  dS = P * (dy v^T - rowsum(dy * y)) * scale;  dq = dS k;  dk = dS^T q
              -> un-rotate -> norm backward -> (B, T, 3C) in one copy

with every product a batched matrix product over contiguous operands. The same numbers as the modules one by one
(tests hold them equal to float32 rounding) in about half the time (docs/benchmarks.md, "Model"). It keeps the
attention probabilities for the backward pass, (B, nh, T, T) floats per layer, hence the length limit.
"""

from __future__ import annotations

import torch

from model.gpt import CausalSelfAttention, apply_rotary
from model.kv_cache import KVCache

MAX_LENGTH = 128  # longer contexts keep the flash kernel, which stores no (T, T) matrix per layer
_EPS = 1e-5  # F.layer_norm's default, as the module path uses


def fused_attention_applies(x: torch.Tensor, dropout: float) -> bool:
    """Whether causal_attention() serves this input: CPU tensors, a short context, no attention dropout."""
    return x.device.type == "cpu" and x.size(1) <= MAX_LENGTH and dropout == 0.0


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: torch.Tensor, num_heads: int, scale: float, qk_norm: bool,
                rope: torch.Tensor | None) -> torch.Tensor:
        B, T, C3 = qkv.shape
        C = C3 // 3
        hs = C // num_heads
        heads = qkv.view(B, T, 3, num_heads, hs).permute(2, 0, 3, 1, 4).contiguous()  # (3, B, nh, T, hs)
        qk = heads[:2]
        mean = rstd = None
        if qk_norm:
            qk, mean, rstd = torch.native_layer_norm(qk, (hs,), None, None, _EPS)
        if rope is not None:
            qk = apply_rotary(qk, rope)
        q, k, v = qk[0].view(B * num_heads, T, hs), qk[1].view(B * num_heads, T, hs), heads[2].view(-1, T, hs)
        mask = torch.full((T, T), float("-inf"), dtype=qkv.dtype, device=qkv.device).triu_(1)
        probs = torch.softmax(torch.baddbmm(mask, q, k.mT, alpha=scale), dim=-1)  # (B*nh, T, T)
        y = torch.bmm(probs, v).view(B, num_heads, T, hs).transpose(1, 2).reshape(B, T, C)
        ctx.save_for_backward(heads, mean, rstd, rope, q, k, v, probs, y)
        ctx.scale, ctx.qk_norm = scale, qk_norm
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        heads, mean, rstd, rope, q, k, v, probs, y = ctx.saved_tensors
        _, B, nh, T, hs = heads.shape
        grad = grad.contiguous()
        dy = grad.view(B, T, nh, hs).transpose(1, 2).reshape(B * nh, T, hs)
        # rowsum(dP * P) over keys equals rowsum(dy * y) over features: a (T, hs) product instead of (T, T).
        dot = (grad * y).view(B, T, nh, hs).sum(-1).transpose(1, 2).reshape(B * nh, T, 1)
        dheads = torch.empty_like(heads)  # (3, B, nh, T, hs)
        torch.bmm(probs.mT, dy, out=dheads[2].view(B * nh, T, hs))
        dscores = torch.bmm(dy, v.mT).sub_(dot).mul_(probs).mul_(ctx.scale)  # (B*nh, T, T)
        torch.bmm(dscores, k, out=dheads[0].view(B * nh, T, hs))
        torch.bmm(dscores.mT, q, out=dheads[1].view(B * nh, T, hs))
        if rope is not None or ctx.qk_norm:  # back through the rotation and the norm of q and k
            dqk = dheads[:2]
            if rope is not None:
                dqk = apply_rotary(dqk, rope.conj())
            if ctx.qk_norm:
                dqk = torch.ops.aten.native_layer_norm_backward(dqk, heads[:2], (hs,), mean, rstd, None, None,
                                                                 [True, False, False])[0]
            dheads[:2] = dqk
        return dheads.permute(1, 3, 0, 2, 4).reshape(B, T, 3 * nh * hs), None, None, None, None


def causal_attention(qkv: torch.Tensor, num_heads: int, scale: float, qk_norm: bool = False,
                     rope: torch.Tensor | None = None) -> torch.Tensor:
    """qkv (B, T, 3C), queries, keys and values side by side as the qkv projection makes them -> (B, T, C).
    `qk_norm` normalises each head's queries and keys (a LayerNorm without weights); `rope` (T, hs/2) complex
    rotates them; `scale` multiplies the logits."""
    return _CausalAttention.apply(qkv, num_heads, scale, qk_norm, rope)


class FusedCausalSelfAttention(CausalSelfAttention):
    """CausalSelfAttention that takes causal_attention() where it applies (no cache, see fused_attention_applies)
    and the readable path everywhere else."""

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        dropout = self.dropout if self.training else 0.0
        if cache is not None or not fused_attention_applies(x, dropout):
            return super().forward(x, rope, cache, layer)
        y = causal_attention(self.qkv(x), self.num_heads, self.scale, self.qk_norm,
                             None if rope is None else rope[:, 0])  # rope (T, 1, hs/2) -> (T, hs/2)
        return self.resid_drop(self.proj(y))
