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


class Linear(nn.Linear):
    """nn.Linear, plus `bf16_matmul`: when set, products run as described above (the trainer sets it for its
    run only, so that its validation estimates are as fast as its steps)."""

    bf16_matmul = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bf16_matmul and self.bias is None and x.dtype == torch.float32:
            return _BF16MatMul.apply(x, self.weight)
        return F.linear(x, self.weight, self.bias)
