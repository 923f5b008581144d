"""The bfloat16 products (model/fast/bf16.py): the numbers of the readable layers, computed in bfloat16."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from model import fast
from model.fast.bf16 import BF16Linear, BF16ReluSquaredFeedForward
from model.gpt import GPT, FeedForward


def test_the_fused_bf16_feed_forward_gives_the_numbers_of_its_layers_one_by_one(model_config):
    torch.manual_seed(0)
    mlp = FeedForward(model_config(50, activation="relu2", bias=False))
    for linear in (mlp.fc, mlp.proj):
        linear.__class__ = BF16Linear
    mlp.__class__ = BF16ReluSquaredFeedForward
    x = torch.randn(3, 16, mlp.fc.in_features, requires_grad=True)
    grad = torch.randn(3, 16, mlp.proj.out_features)

    def run(forward):
        for tensor in (x, mlp.fc.weight, mlp.proj.weight):
            tensor.grad = None
        out = forward()
        out.backward(grad)
        return out.detach(), x.grad.clone(), mlp.fc.weight.grad.clone(), mlp.proj.weight.grad.clone()

    assert "ReluSquared" in type(mlp(x).grad_fn).__name__  # one node: the fused pass was taken
    fused = run(lambda: mlp(x))
    one_by_one = run(lambda: mlp.proj(mlp.activate(mlp.fc(x))))
    assert mlp.fc.weight.grad is not None and fused[0].abs().sum() > 0
    for a, b in zip(fused, one_by_one):
        assert torch.equal(a, b)


def test_a_bf16_product_is_the_float32_product_of_the_rounded_operands():
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(4, 16, requires_grad=True)
    expected = F.linear(x.to(torch.bfloat16).float(), linear.weight.to(torch.bfloat16).float())
    linear.__class__ = BF16Linear
    out = linear(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-2, rtol=1e-2)
    out.sum().backward()
    assert x.grad is not None and linear.weight.grad is not None


def test_the_network_with_bf16_products_learns_as_the_readable_one_within_bfloat16_rounding(model_config):
    torch.manual_seed(0)
    model = GPT(model_config(40, activation="relu2"))
    idx, targets = torch.randint(0, 40, (2, 16)), torch.randint(0, 40, (2, 16))

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        _, loss = model(idx, targets)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = loss_and_grads()
    fast.enable(model, attention=False, bf16=True, decode=False)
    assert isinstance(model.blocks[0].mlp, BF16ReluSquaredFeedForward)
    bf16_loss, bf16_grads = loss_and_grads()
    assert abs(bf16_loss - loss) < 1e-2
    for name, g in grads.items():
        assert torch.allclose(bf16_grads[name], g, atol=2e-2, rtol=5e-2), name
