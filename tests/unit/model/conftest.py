"""Shared fixtures for the model tests: a small corpus made here (no downloads) and tiny configurations."""

from __future__ import annotations

import pytest
import torch

from model.config import ModelConfig, TrainConfig, resolve_hyperparameters
from model.tokenizers import train_tokenizer

_LINES = [
    "the cat sat on the mat.",
    "the dog sat on the log.",
    "a cat and a dog met on the mat.",
    "the dog ran, the cat sat.",
]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tests are small: one thread avoids fighting other test processes over the cores.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def corpus() -> str:
    return "\n".join(_LINES[i % len(_LINES)] for i in range(300)) + "\n"


@pytest.fixture(scope="session")
def char_tokenizer(corpus):
    return train_tokenizer("char", corpus)


@pytest.fixture
def tiny() -> tuple[ModelConfig, TrainConfig]:
    return tuple(resolve_hyperparameters({"preset": "tiny"}))


@pytest.fixture
def model_config():
    """tiny's network with overrides, for a given vocabulary size."""

    def make(vocab_size: int, **overrides) -> ModelConfig:
        model_cfg, _ = resolve_hyperparameters({"preset": "tiny", **overrides})
        return model_cfg.with_vocab(vocab_size)

    return make
