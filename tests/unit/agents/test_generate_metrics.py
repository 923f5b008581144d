"""The generate agent's metrics read the engines themselves: sequences in a step, requests waiting, tokens made."""

from __future__ import annotations

import torch
from prometheus_client import generate_latest

from agents.generate.metrics import registry_of
from agents.generate.serving import ModelCache, Served
from model.config import resolve_hyperparameters
from model.engine import Engine
from model.generate import SamplingParams
from model.gpt import GPT
from model.tokenizers import train_tokenizer


def test_metrics_count_active_waiting_and_made():
    tok = train_tokenizer("char", "the cat sat on the mat\n" * 20)
    config, _ = resolve_hyperparameters({"preset": "tiny"})
    torch.manual_seed(0)
    engine = Engine(GPT(config.with_vocab(tok.vocab_size)), tok, slots=1)
    cache = ModelCache(store=None, size=2)  # type: ignore[arg-type]: nothing is loaded from storage here
    cache._entries["ckpt@1"] = Served(engine, "engine", start=False)  # this test steps the engine itself
    for _ in range(2):
        engine.submit("the", SamplingParams(max_new_tokens=3, ignore_eot=True), lambda token: None)
    engine.step()
    text = generate_latest(registry_of(cache)).decode()
    assert 'lfz_generate_active_sequences{checkpoint="ckpt@1"} 1.0' in text
    assert 'lfz_generate_waiting_requests{checkpoint="ckpt@1"} 1.0' in text
    assert 'lfz_generate_tokens_total{checkpoint="ckpt@1"} 1.0' in text
