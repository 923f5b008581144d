"""Hyperparameters: presets, both naming styles, and errors that name the offending field."""

from __future__ import annotations

import math

import pytest

from model.config import (KNOWN_NAMES, ConfigError, ModelConfig, TrainConfig, describe_hyperparameters,
                          resolve_hyperparameters)
from model.presets import DEFAULT_PRESET, PRESETS


def test_presets_have_the_documented_values():
    m, t = resolve_hyperparameters({"preset": "classic"})
    assert (t.batch_size, m.context_length, m.d_model, m.num_blocks, m.num_heads) == (4, 16, 64, 8, 4)
    assert (t.learning_rate, m.dropout, t.max_iters) == (1e-3, 0.1, 5000)
    m, t = resolve_hyperparameters({"preset": "cpu-baby"})
    assert (t.batch_size, m.context_length, m.d_model, m.num_blocks, m.num_heads) == (12, 64, 128, 4, 4)
    assert (t.learning_rate, m.dropout, t.max_iters) == (1e-3, 0.0, 2000)
    m, _ = resolve_hyperparameters({"preset": "small"})
    assert (m.context_length, m.d_model, m.num_blocks, m.num_heads) == (256, 384, 6, 6)
    assert {"tiny", "classic", "cpu-baby", "small"} <= set(PRESETS)


def test_classic_upper_case_names_are_accepted():
    m, t = resolve_hyperparameters({"preset": "tiny", "LEARNING_RATE": 3e-4, "MAX_ITERS": 7, "D_MODEL": 48,
                                    "NUM_HEADS": 3, "NUM_BLOCKS": 1, "CONTEXT_LENGTH": 8, "BATCH_SIZE": 2,
                                    "DROPOUT": 0.2})
    assert (t.learning_rate, t.max_iters, t.batch_size) == (3e-4, 7, 2)
    assert (m.d_model, m.num_heads, m.num_blocks, m.context_length, m.dropout) == (48, 3, 1, 8, 0.2)


def test_own_names_override_the_preset_and_echo_back():
    hp = resolve_hyperparameters({"preset": "tiny", "max_iters": 50, "positions": "learned"})
    d = hp.to_dict()
    assert d["preset"] == "tiny" and d["max_iters"] == 50 and d["positions"] == "learned"
    assert "vocab_size" not in d
    model_cfg, train_cfg = hp
    assert isinstance(model_cfg, ModelConfig) and isinstance(train_cfg, TrainConfig)


def test_the_default_preset_is_the_one_a_cpu_trains_in_a_minute():
    assert resolve_hyperparameters({}).preset == "cpu-baby" == DEFAULT_PRESET
    assert resolve_hyperparameters({"max_iters": 3}).train.max_iters == 3


@pytest.mark.parametrize("typed, suggested", [("learnig_rate", "learning_rate"), ("n_heads", "num_heads"),
                                               ("max_iter", "max_iters"), ("LEARNING_RAT", "learning_rate")])
def test_an_unknown_name_gets_the_nearest_known_one(typed, suggested):
    with pytest.raises(ConfigError) as err:
        resolve_hyperparameters({typed: 1})
    assert err.value.field == typed
    assert f"did you mean {suggested}?" in err.value.message


def test_a_name_like_nothing_known_gets_no_suggestion():
    with pytest.raises(ConfigError) as err:
        resolve_hyperparameters({"zzzqqq": 1})
    assert "did you mean" not in err.value.message and "unknown hyperparameter" in err.value.message


def test_nanogpt_names_that_mean_the_same_are_accepted():
    m, t = resolve_hyperparameters({"preset": "tiny", "n_layer": 3, "n_head": 2, "n_embd": 48, "block_size": 32,
                                    "warmup_iters": 7, "eval_interval": 10, "gradient_accumulation_steps": 2})
    assert (m.num_blocks, m.num_heads, m.d_model, m.context_length) == (3, 2, 48, 32)
    assert (t.warmup, t.eval_every, t.grad_accum) == (7, 10, 2)


@pytest.mark.parametrize("name, value, needle", [("max_iters", 10**12, "at most 1e+06"),
                                                 ("eval_iters", 10**7, "at most 10000"),
                                                 ("grad_accum", 5000, "at most 1024"),
                                                 ("warmup", 10**9, "at most 1e+06"),
                                                 ("d_model", 10**6, "at most 8192")])
def test_every_value_that_sets_the_work_has_an_upper_bound(name, value, needle):
    with pytest.raises(ConfigError) as err:
        resolve_hyperparameters({"preset": "tiny", name: value})
    assert err.value.field == name and needle in err.value.message


def test_every_hyperparameter_is_described_with_its_default_and_bounds():
    described = {d["name"]: d for d in describe_hyperparameters()}
    assert set(described) == set(KNOWN_NAMES) - {"preset"}
    assert all(d["help"] for d in described.values())
    assert described["max_iters"]["default"] == TrainConfig().max_iters and described["max_iters"]["bounds"]
    assert described["positions"]["choices"] == ["rotary", "learned", "sinusoidal"]
    assert "n_layer" in described["num_blocks"]["aliases"]
    assert all(PRESETS[name].about for name in PRESETS)


def test_integral_floats_become_ints_and_none_keeps_the_default():
    _, t = resolve_hyperparameters({"preset": "tiny", "max_iters": 20.0, "seed": None})
    assert t.max_iters == 20 and isinstance(t.max_iters, int) and t.seed == TrainConfig().seed


@pytest.mark.parametrize(
    "hp, field",
    [
        ({"d_model": 30, "num_heads": 4}, "d_model"),
        ({"D_MODEL": 30, "NUM_HEADS": 4}, "D_MODEL"),
        ({"num_heads": 0}, "num_heads"),
        ({"BATCH_SIZE": -1}, "BATCH_SIZE"),
        ({"context_length": 0}, "context_length"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"max_iters": 0}, "max_iters"),
        ({"dropout": 1.0}, "dropout"),
        ({"DROPOUT": -0.1}, "DROPOUT"),
        ({"learning_rate": math.nan}, "learning_rate"),
        ({"LEARNING_RATE": math.inf}, "LEARNING_RATE"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"max_iters": 2.5}, "max_iters"),
        ({"max_iters": "many"}, "max_iters"),
        ({"batch_size": True}, "batch_size"),
        ({"positions": "absolute"}, "positions"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"val_fraction": 0}, "val_fraction"),
        ({"warmup": -1}, "warmup"),
        ({"bogus": 1}, "bogus"),
        ({"preset": "huge"}, "preset"),
        ({"PRESET": "huge"}, "PRESET"),
        ({"max_iters": 5, "MAX_ITERS": 6}, "MAX_ITERS"),
    ],
)
def test_invalid_values_name_the_field(hp, field):
    with pytest.raises(ConfigError) as err:
        resolve_hyperparameters({"preset": "tiny", **hp} if "preset" not in hp and "PRESET" not in hp else hp)
    assert err.value.field == field
    assert isinstance(err.value, ValueError) and field in str(err.value)


def test_rotary_needs_an_even_head_size():
    with pytest.raises(ConfigError) as err:
        ModelConfig(d_model=12, num_heads=4, positions="rotary")
    assert err.value.field == "d_model"
    ModelConfig(d_model=12, num_heads=4, positions="learned")  # fine without rotary
