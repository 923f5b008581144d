"""Linear layers whose matrix products run in bfloat16 while everything else stays float32 (a fast path for CPUs
with AVX512-BF16: see model/fast).

On a CPU with AVX512-BF16 a bf16 matrix product runs at twice the float32 rate, but bf16 element-wise kernels
are slower than float32 ones, so autocast (which also moves activations to bf16) gains nothing there. This
layer casts only at the product: inputs and weight are rounded to bf16, the product accumulates in float32
inside oneDNN, and its result comes back as float32; the backward pass does the same for both gradients.
The master weights, the optimiser state and every other operation stay float32.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn import functional as F

from model.gpt import FeedForward


class _BF16MatMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        xb, wb = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        ctx.save_for_backward(xb, wb)
        return F.linear(xb, wb).float()  # (..., out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xb, wb = ctx.saved_tensors
        gb = grad.to(torch.bfloat16)
        grad_x = (gb @ wb).float() if ctx.needs_input_grad[0] else None  # (..., in)
        grad_w = (gb.reshape(-1, gb.size(-1)).t() @ xb.reshape(-1, xb.size(-1))).float()  # (out, in)
        return grad_x, grad_w


class _BF16ReluSquaredMLP(torch.autograd.Function):
    """proj(relu(fc(x))^2), the feed-forward network, with both products in bfloat16 as above and the activation
    done in one piece: its backward is one product (2 relu(h) g) instead of the two products, the sum and the
    threshold that autograd records for relu followed by a square. The same numbers as the layers one by one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w_fc: torch.Tensor, w_proj: torch.Tensor) -> torch.Tensor:
        xb, fcb, projb = x.to(torch.bfloat16), w_fc.to(torch.bfloat16), w_proj.to(torch.bfloat16)
        r = F.linear(xb, fcb).float().relu_()  # (..., hidden)
        squared = (r * r).to(torch.bfloat16)
        ctx.save_for_backward(xb, fcb, projb, r, squared)
        return F.linear(squared, projb).float()  # (..., out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xb, fcb, projb, r, squared = ctx.saved_tensors
        gb = grad.to(torch.bfloat16)
        grad_proj = (gb.reshape(-1, gb.size(-1)).t() @ squared.reshape(-1, squared.size(-1))).float()
        grad_h = (gb @ projb).float().mul_(r).mul_(2.0).to(torch.bfloat16)  # d relu(h)^2 / dh = 2 relu(h)
        grad_fc = (grad_h.reshape(-1, grad_h.size(-1)).t() @ xb.reshape(-1, xb.size(-1))).float()
        grad_x = (grad_h @ fcb).float() if ctx.needs_input_grad[0] else None
        return grad_x, grad_fc, grad_proj


class BF16Linear(nn.Linear):
    """nn.Linear whose product runs in bfloat16 as described above, for float32 inputs without a bias; the readable
    path otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None and x.dtype == torch.float32:
            return _BF16MatMul.apply(x, self.weight)
        return super().forward(x)


class BF16ReluSquaredFeedForward(FeedForward):
    """The feed-forward network with both products in bfloat16 and ReLU^2 in one piece, where its layers are
    BF16Linear without biases; the readable path otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.relu2 and isinstance(self.fc, BF16Linear) and isinstance(self.proj, BF16Linear)
                and self.fc.bias is None and self.proj.bias is None and x.dtype == torch.float32):
            return super().forward(x)
        return self.drop(_BF16ReluSquaredMLP.apply(x, self.fc.weight, self.proj.weight))
