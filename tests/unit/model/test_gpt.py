"""The network: shapes, causality, weight tying, the loss at initialisation, cache-consistent forward passes."""

from __future__ import annotations

import math

import pytest
import torch

from model.config import ConfigError, ModelConfig
from model.gpt import GPT

POSITIONS = ["rotary", "learned", "sinusoidal"]


@pytest.mark.parametrize("positions", POSITIONS)
def test_shapes_and_loss(model_config, positions):
    torch.manual_seed(0)
    model = GPT(model_config(50, positions=positions))
    idx = torch.randint(0, 50, (3, 16))
    logits, loss = model(idx)
    assert logits.shape == (3, 16, 50) and loss is None
    logits, loss = model(idx, idx)
    assert loss.shape == () and torch.isfinite(loss)
    logits, _ = model(idx, last_only=True)
    assert logits.shape == (3, 1, 50)
    # Small initial weights: predictions start near uniform.
    assert abs(model(idx, torch.randint(0, 50, (3, 16)))[1].item() - math.log(50)) < 0.5


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("qk_norm", [False, True])
def test_causal_masking_a_token_never_sees_the_future(model_config, positions, qk_norm):
    torch.manual_seed(0)
    model = GPT(model_config(30, positions=positions, qk_norm=qk_norm, activation="relu2")).eval()
    idx = torch.randint(0, 30, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 30
    before, _ = model(idx)
    after, _ = model(changed)
    assert torch.allclose(before[:, :10], after[:, :10], atol=1e-6)
    assert not torch.allclose(before[:, 10:], after[:, 10:])


def test_output_head_is_tied_to_the_embedding(model_config):
    model = GPT(model_config(40))
    assert model.head.weight is model.tok_emb.weight
    untied = GPT(model_config(40, tie_embeddings=False))
    assert untied.head.weight is not untied.tok_emb.weight
    assert untied.num_parameters() == model.num_parameters() + 40 * model.config.d_model


def test_num_parameters_counts_shared_weights_once(model_config):
    model = GPT(model_config(40))
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert model.num_parameters(non_embedding=True) == model.num_parameters() - 40 * model.config.d_model


def test_sequence_longer_than_context_is_rejected(model_config):
    model = GPT(model_config(20))
    with pytest.raises(ValueError):
        model(torch.zeros(1, model.config.context_length + 1, dtype=torch.long))


def test_vocab_size_must_be_set():
    with pytest.raises(ConfigError) as err:
        GPT(ModelConfig(context_length=8, d_model=16, num_heads=2, num_blocks=1))
    assert err.value.field == "vocab_size"


def test_targets_minus_one_are_ignored(model_config):
    torch.manual_seed(0)
    model = GPT(model_config(20))
    idx = torch.randint(0, 20, (1, 8))
    targets = idx.clone()
    _, full = model(idx[:, :4], targets[:, :4])
    targets[:, 4:] = -1
    logits, partial = model(idx, targets)
    assert torch.allclose(full, partial, atol=1e-6)


@pytest.mark.parametrize("positions", POSITIONS)
def test_cached_forward_matches_the_full_forward(model_config, positions):
    """Prefill + one token at a time through the KV cache gives the logits of one full pass."""
    torch.manual_seed(0)
    model = GPT(model_config(25, positions=positions)).eval()
    idx = torch.randint(0, 25, (2, 12))
    full, _ = model(idx)
    cache = model.new_cache(2)
    cache.reset()
    with torch.inference_mode():
        steps = [model(idx[:, :5], cache=cache)[0]]
        steps += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(5, 12)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("positions", POSITIONS)
def test_left_padding_does_not_change_the_logits(model_config, positions):
    torch.manual_seed(0)
    model = GPT(model_config(25, positions=positions)).eval()
    short = torch.randint(3, 25, (1, 6))
    alone, _ = model(short)
    padded = torch.cat([torch.full((1, 4), 1), short], dim=1)  # 4 pad tokens on the left
    cache = model.new_cache(1)
    cache.reset(torch.tensor([4]))
    with torch.inference_mode():
        logits, _ = model(padded, cache=cache)
    assert torch.allclose(logits[:, 4:], alone, atol=1e-5)
