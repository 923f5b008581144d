"""One decoding step as plain tensor operations over the weights, gathered once per cache (a fast path: see
model/fast).

At one token per pass, module calls and attribute look-ups take a third of a step's time on a CPU. This step does
what GPT.forward does for one new token per row, as rows of (B, C) rather than (B, 1, C): a product of a matrix with
a transposed weight is one kernel, where a linear layer over a 3-D input reshapes around it. Rows padded differently
(a batch of prompts of different lengths) take the readable path, which builds the masks.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from model.gpt import GPT, apply_rotary
from model.kv_cache import KVCache


def affine(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (B, in) @ weight_t (in, out) (+ bias): a linear layer for rows, as one kernel."""
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


class UnrolledDecodeGPT(GPT):
    def decode(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """idx (B, 1) -> next-token logits (B, V), as GPT.decode. Call it under torch.inference_mode()."""
        if cache.padded or cache.length == 0:
            return super().decode(idx, cache)
        if cache.plan is None:
            cache.plan = decode_plan(self)
        C, nh, hs, qk_norm, scale, layers, ln_f, head_t = cache.plan
        B = idx.size(0)
        start, _ = cache.begin(1)
        x = self.tok_emb.weight[idx[:, 0]]  # (B, C)
        rope = None
        if self.config.positions == "rotary":
            rope = self.rotary(start, 1)  # (1, 1, hs/2)
        elif self.pos_emb is not None:
            x = x + self.pos_emb.weight[start]
        else:
            x = x + self.pos_table[start]
        for i, (ln1, qkv_t, qkv_b, proj_t, proj_b, ln2, fc_t, fc_b, out_t, out_b, activate) in enumerate(layers):
            qkv = affine(F.layer_norm(x, (C,), *ln1), qkv_t, qkv_b).view(B, 3, nh, hs)
            qk = qkv[:, :2]
            if qk_norm:
                qk = F.layer_norm(qk, (hs,))
            if rope is not None:
                qk = apply_rotary(qk, rope)  # (B, 2, nh, hs)
            keys, values, _, _ = cache.attend(i, qk[:, 1, :, None], qkv[:, 2, :, None])  # (B, nh, n, hs)
            y = F.scaled_dot_product_attention(qk[:, 0, :, None], keys, values, scale=scale)  # (B, nh, 1, hs)
            x = x + affine(y.view(B, C), proj_t, proj_b)
            h = activate(affine(F.layer_norm(x, (C,), *ln2), fc_t, fc_b))  # (B, mlp_ratio * C)
            x = x + affine(h, out_t, out_b)
        cache.end(1)
        return affine(F.layer_norm(x, (C,), *ln_f), head_t, None)  # (B, V)


def decode_plan(model: GPT) -> tuple:
    """The weights a decoding step reads, gathered once; matrices as transposed views (no copies). Also the batching
    engine's (model/engine.py)."""
    c = model.config
    layers = [((b.ln1.weight, b.ln1.bias), b.attn.qkv.weight.t(), b.attn.qkv.bias, b.attn.proj.weight.t(),
               b.attn.proj.bias, (b.ln2.weight, b.ln2.bias), b.mlp.fc.weight.t(), b.mlp.fc.bias,
               b.mlp.proj.weight.t(), b.mlp.proj.bias, b.mlp.activate) for b in model.blocks]
    scale = c.qk_gain / math.sqrt(c.head_size)
    ln_f = (model.ln_f.weight, model.ln_f.bias)
    return c.d_model, c.num_heads, c.head_size, c.qk_norm, scale, layers, ln_f, model.head.weight.t()
