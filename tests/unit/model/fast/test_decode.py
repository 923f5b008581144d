"""The unrolled decoding step (model/fast/decode.py): the network of GPT.forward, one token at a time."""

from __future__ import annotations

import pytest
import torch

from model import fast
from model.fast.decode import UnrolledDecodeGPT
from model.gpt import GPT

POSITIONS = ["rotary", "learned", "sinusoidal"]


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("activation", ["relu2", "gelu"])
def test_decode_matches_the_readable_forward(model_config, positions, qk_norm, activation):
    torch.manual_seed(0)
    model = GPT(model_config(25, positions=positions, qk_norm=qk_norm, activation=activation)).eval()
    idx = torch.randint(0, 25, (2, 12))
    full, _ = model(idx)  # the readable network, every token at once
    fast.enable(model, attention=False, bf16=False, decode=True)
    assert type(model) is UnrolledDecodeGPT
    cache = model.new_cache(2)
    cache.reset()
    with torch.inference_mode():
        steps = [model(idx[:, :5], cache=cache)[0]]
        steps += [model.decode(idx[:, t:t + 1], cache)[:, None] for t in range(5, 12)]
    assert cache.plan is not None  # the unrolled step ran, not the readable one
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_padded_rows_take_the_readable_path_and_agree(model_config):
    torch.manual_seed(0)
    model = GPT(model_config(25)).eval()
    fast.enable(model)
    cache = model.new_cache(2)
    cache.reset(torch.tensor([0, 3]))
    idx = torch.randint(3, 25, (2, 6))
    with torch.inference_mode():
        model(idx, cache=cache)
        model.decode(idx[:, :1], cache)
    assert cache.plan is None  # padded rows: masks, which only the readable path builds
