"""The CPU attention function (model/fast/attention.py): the numbers and gradients of the readable module."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

import model.fast.attention as attention
from model import fast
from model.fast.attention import causal_attention, fused_attention_applies
from model.gpt import GPT, apply_rotary, rotary_frequencies, rotary_table


def reference(qkv, num_heads, scale, qk_norm, rope):
    """What CausalSelfAttention computes through scaled_dot_product_attention."""
    B, T, C3 = qkv.shape
    hs = C3 // 3 // num_heads
    x = qkv.view(B, T, 3, num_heads, hs)
    qk, v = x[:, :, :2], x[:, :, 2]
    if qk_norm:
        qk = F.layer_norm(qk, (hs,))
    if rope is not None:
        qk = apply_rotary(qk, rope[:, None, None])
    q, k = qk.unbind(2)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                       scale=scale)
    return y.transpose(1, 2).reshape(B, T, C3 // 3)


def _rope(T, hs, dtype=torch.float32):
    table = rotary_table(torch.arange(T), rotary_frequencies(hs, 10000.0))
    return table.to(torch.complex128) if dtype == torch.float64 else table


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("rotary", [False, True])
def test_same_output_and_gradient_as_the_modules(qk_norm, rotary):
    torch.manual_seed(0)
    B, T, nh, hs = 3, 16, 4, 8
    qkv = torch.randn(B, T, 3 * nh * hs, requires_grad=True)
    grad = torch.randn(B, T, nh * hs)
    rope = _rope(T, hs) if rotary else None
    scale = 1.3 / math.sqrt(hs)
    results = []
    for fn in (causal_attention, reference):
        qkv.grad = None
        out = fn(qkv, nh, scale, qk_norm, rope)
        out.backward(grad)
        results.append((out.detach(), qkv.grad.clone()))
    (out, dqkv), (ref_out, ref_dqkv) = results
    assert torch.allclose(out, ref_out, atol=1e-5)
    assert torch.allclose(dqkv, ref_dqkv, atol=1e-5)
    assert dqkv.abs().sum() > 0


@pytest.mark.parametrize("qk_norm", [False, True])
def test_gradient_is_the_derivative(qk_norm):
    torch.manual_seed(0)
    qkv = torch.randn(2, 5, 3 * 2 * 4, dtype=torch.float64, requires_grad=True)
    rope = _rope(5, 4, torch.float64)
    assert torch.autograd.gradcheck(lambda t: causal_attention(t, 2, 0.5, qk_norm, rope), (qkv,))


def test_a_query_never_sees_a_later_key():
    torch.manual_seed(0)
    qkv = torch.randn(1, 8, 3 * 2 * 4)
    changed = qkv.clone()
    changed[:, 5:] += 1.0
    before, after = causal_attention(qkv, 2, 0.5, True), causal_attention(changed, 2, 0.5, True)
    assert torch.equal(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_the_network_takes_it_on_the_cpu_and_learns_the_same(model_config, monkeypatch):
    torch.manual_seed(0)
    model = GPT(model_config(40, qk_norm=True, activation="relu2"))
    idx, targets = torch.randint(0, 40, (2, 16)), torch.randint(0, 40, (2, 16))

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        _, loss = model(idx, targets)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = loss_and_grads()  # the readable network
    calls = []
    monkeypatch.setattr(attention, "causal_attention", lambda *a: calls.append(1) or causal_attention(*a))
    fast.enable(model, attention=True, bf16=False, decode=False)
    fused_loss, fused_grads = loss_and_grads()
    assert len(calls) == model.config.num_blocks  # every block took it
    assert torch.allclose(fused_loss, loss, atol=1e-6)
    for name, g in grads.items():
        assert torch.allclose(fused_grads[name], g, atol=1e-5), name
    monkeypatch.setattr(attention, "MAX_LENGTH", 0)  # every context is "too long": the readable path again
    loss_and_grads()
    assert len(calls) == model.config.num_blocks


def test_which_inputs_it_serves():
    x = torch.zeros(2, attention.MAX_LENGTH, 8)
    assert fused_attention_applies(x, 0.0)
    assert not fused_attention_applies(x, 0.1)  # attention dropout: scaled_dot_product_attention does it
    assert not fused_attention_applies(torch.zeros(2, attention.MAX_LENGTH + 1, 8), 0.0)
