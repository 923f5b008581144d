"""Linear layers whose matrix products can run in bfloat16 while everything else stays float32.

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


def relu_squared_mlp(x: torch.Tensor, fc: "Linear", proj: "Linear") -> torch.Tensor | None:
    """The fused feed-forward pass when both layers run bf16 products without biases; None otherwise."""
    if fc.bf16_matmul and proj.bf16_matmul and fc.bias is None and proj.bias is None and x.dtype == torch.float32:
        return _BF16ReluSquaredMLP.apply(x, fc.weight, proj.weight)
    return None


class Linear(nn.Linear):
    """nn.Linear, plus `bf16_matmul`: when set, products run as described above (the trainer sets it for its
    run only, so that its validation estimates are as fast as its steps)."""

    bf16_matmul = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bf16_matmul and self.bias is None and x.dtype == torch.float32:
            return _BF16MatMul.apply(x, self.weight)
        return F.linear(x, self.weight, self.bias)
