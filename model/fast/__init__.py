"""Fast paths: the same network computed faster on some devices and shapes, behind one switch.

model/gpt.py is the model; these make it faster where they apply and defer to it everywhere else:

    attention.py  CPU, contexts up to 128, no attention dropout, no KV cache: the attention sublayer as one autograd
                  function with a written-out backward (about 10% off a cpu-baby training step)
    bf16.py       CPUs with fast bfloat16 products (AVX512-BF16), training: the blocks' matrix products in bfloat16,
                  and the ReLU^2 feed-forward network in one piece (a step in about 60% of the time)
    decode.py     generation: one decoding step as plain tensor operations (about 30% off a token on a CPU)

`enable(model, ...)` swaps each module of the network for the subclass that holds its fast path (a change of class
only: parameters, buffers and the state dict stay as they are) and `disable(model)` swaps them back. Each fast path
is held equal to the readable one by a test (tests/unit/model/fast/), and a model on which `enable` was never called
is correct: nothing outside this package depends on it.
"""

from __future__ import annotations

import torch.nn as nn

from model.fast.attention import FusedCausalSelfAttention
from model.fast.bf16 import BF16Linear, BF16ReluSquaredFeedForward
from model.fast.decode import UnrolledDecodeGPT
from model.gpt import GPT, CausalSelfAttention, FeedForward

__all__ = ["disable", "enable"]


def _swap(module: nn.Module, readable: type[nn.Module], fast: type[nn.Module], on: bool) -> None:
    if isinstance(module, readable):
        module.__class__ = fast if on else readable


def enable(model: GPT, *, attention: bool = True, bf16: bool = False, decode: bool = True) -> GPT:
    """Take the fast paths chosen here (and leave the others readable); returns the model."""
    _swap(model, GPT, UnrolledDecodeGPT, decode)
    for block in model.blocks:
        _swap(block.attn, CausalSelfAttention, FusedCausalSelfAttention, attention)
        _swap(block.mlp, FeedForward, BF16ReluSquaredFeedForward, bf16)
        for linear in (block.attn.qkv, block.attn.proj, block.mlp.fc, block.mlp.proj):
            _swap(linear, nn.Linear, BF16Linear, bf16)
    return model


def disable(model: GPT) -> GPT:
    """The readable network everywhere."""
    return enable(model, attention=False, bf16=False, decode=False)
