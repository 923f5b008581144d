"""Evaluation numbers on cases whose answer is known, and the report's shape."""

from __future__ import annotations

import json
import math

import pytest
import torch

from model.evaluate import evaluate, held_out_metrics, token_statistics
from model.generate import SamplingParams
from model.gpt import GPT
from model.tokenizers import train_tokenizer


def _uniform_model(model_config, vocab_size: int) -> GPT:
    model = GPT(model_config(vocab_size))
    with torch.no_grad():
        model.head.weight.zero_()  # every logit 0: the uniform distribution over the vocabulary
    return model.eval()


def test_uniform_logits_give_perplexity_equal_to_vocab_size(model_config, char_tokenizer):
    model = _uniform_model(model_config, char_tokenizer.vocab_size)
    text = "the cat sat on the mat. " * 5  # longer than the context: several windows
    m = held_out_metrics(model, char_tokenizer, text)
    V = char_tokenizer.vocab_size
    assert m["tokens"] == m["characters"] == len(text)  # every character predicted once, the first included
    assert m["loss"] == pytest.approx(math.log(V), rel=1e-5)
    assert m["perplexity"] == pytest.approx(V, rel=1e-4)
    assert m["bits_per_character"] == pytest.approx(math.log2(V), rel=1e-5)


def test_bits_per_character_uses_characters_not_tokens(model_config):
    tok = train_tokenizer("word", "the cat sat on the mat. " * 20, min_frequency=2)
    model = _uniform_model(model_config, tok.vocab_size)
    text = "the cat sat on the mat."
    m = held_out_metrics(model, tok, text)
    n_tokens = len(tok.encode(text))
    assert m["tokens"] == n_tokens < len(text)
    assert m["perplexity"] == pytest.approx(tok.vocab_size, rel=1e-4)
    assert m["bits_per_character"] == pytest.approx(n_tokens * math.log2(tok.vocab_size) / len(text), rel=1e-5)


def test_perplexity_uses_shifted_targets(model_config, char_tokenizer):
    """A model that copies its input (predicts the current token) must not look good on next-token loss."""
    torch.manual_seed(0)
    model = GPT(model_config(char_tokenizer.vocab_size)).eval()
    text = "the cat sat on "  # 15 characters + <|endoftext|>: one window of the context (16)
    ids = torch.tensor([[char_tokenizer.eot_id] + char_tokenizer.encode(text)])
    logits, _ = model(ids)
    shifted = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).item()
    assert held_out_metrics(model, char_tokenizer, text)["loss"] == pytest.approx(shifted, rel=1e-5)


def test_token_statistics_on_a_known_case():
    stats = token_statistics([[1, 2, 1, 2, 1, 2], [3, 3]])
    assert stats["total_tokens"] == 8
    assert stats["distinct_1"] == pytest.approx(3 / 8)
    # bigrams: (1,2),(2,1),(1,2),(2,1),(1,2),(3,3) -> 3 distinct of 6
    assert stats["distinct_2"] == pytest.approx(3 / 6)
    # trigrams of the first: 121, 212, 121, 212 -> 2 repeats of 4
    assert stats["repetition_rate"] == pytest.approx(2 / 4)
    p = [3 / 8, 3 / 8, 2 / 8]
    assert stats["entropy_bits"] == pytest.approx(-sum(x * math.log2(x) for x in p))


def test_report_is_json_serialisable_and_complete(model_config, char_tokenizer):
    torch.manual_seed(0)
    model = GPT(model_config(char_tokenizer.vocab_size)).eval()
    report = evaluate(model, char_tokenizer, "the dog sat on the log.", ["the cat", "a dog", ""],
                      SamplingParams(max_new_tokens=12, seed=0, ignore_eot=True))
    json.dumps(report)
    assert report["held_out"]["perplexity"] > 1
    gen = report["generation"]
    assert gen["completions"] == 3
    assert gen["response_tokens"]["mean"] == 12
    assert set(gen["token_distribution"]) >= {"entropy_bits", "distinct_1", "distinct_2", "repetition_rate"}
    speed = gen["speed"]
    assert speed["tokens_per_s"] > 0 and set(speed["latency_ms"]) >= {"p50", "p90", "p99"}
    assert speed["ttft_ms"]["mean"] > 0


def test_report_without_held_out_text_or_prompts(model_config, char_tokenizer):
    model = GPT(model_config(char_tokenizer.vocab_size))
    report = evaluate(model, char_tokenizer, None, [])
    assert report["held_out"] is None and report["generation"] is None
