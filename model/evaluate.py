"""Evaluation: a JSON-serialisable report of how well a model predicts held-out text and how it generates.

- Held-out text: next-token loss (targets shifted by one), perplexity = exp(loss), and bits per character =
  total nats / characters / ln 2, which compares models with different tokenizers. The text is read after an
  <|endoftext|> token, so every one of its tokens, the first included, is predicted exactly once.
- Prompts: response lengths, the distribution of generated tokens (entropy, distinct-1/2, repetition rate) and
  speed (tokens/s, time to first token, latency percentiles).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from typing import Any, Sequence

import torch
from torch.nn import functional as F

from model import fast
from model.data import sequential_windows
from model.device import autocast
from model.generate import Generator, SamplingParams
from model.gpt import GPT
from model.tokenizers import Tokenizer


@torch.no_grad()
def sequence_nats(model: GPT, ids: torch.Tensor, batch_size: int = 32) -> tuple[float, int]:
    """Total next-token loss (nats) of ids[1:] given what precedes each, and how many tokens that is."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nats, count = 0.0, 0
    for x, y in sequential_windows(ids, model.config.context_length, batch_size):
        x, y = x.to(device), y.to(device)
        with autocast(device):
            logits, _ = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-1,
                               reduction="sum")
        nats += loss.item()
        count += int((y >= 0).sum())
    model.train(was_training)
    return nats, count


def held_out_metrics(model: GPT, tokenizer: Tokenizer, text: str) -> dict[str, Any]:
    ids = torch.tensor([tokenizer.eot_id] + tokenizer.encode(text), dtype=torch.long)
    nats, count = sequence_nats(model, ids)
    chars = len(text)
    loss = nats / max(count, 1)
    return {
        "tokens": count,
        "characters": chars,
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else None,  # None: too large for JSON
        "bits_per_token": loss / math.log(2),
        "bits_per_character": nats / max(chars, 1) / math.log(2),
    }


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)

    def pct(p: float) -> float:
        k = (len(s) - 1) * p
        lo, hi = math.floor(k), math.ceil(k)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)

    return {"mean": statistics.fmean(s), "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": s[-1]}


def _summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "min": min(values),
            "max": max(values), "std": statistics.pstdev(values)}


def token_statistics(sequences: Sequence[Sequence[int]]) -> dict[str, float]:
    """Entropy (bits) of the generated-token distribution, distinct-1/2 and the repetition rate: the share of
    3-grams that already occurred earlier in the same response."""
    unigrams = Counter(t for seq in sequences for t in seq)
    total = sum(unigrams.values())
    bigrams = [tuple(seq[i:i + 2]) for seq in sequences for i in range(len(seq) - 1)]
    repeated = trigrams = 0
    for seq in sequences:
        seen = set()
        for i in range(len(seq) - 2):
            gram = tuple(seq[i:i + 3])
            repeated += gram in seen
            seen.add(gram)
            trigrams += 1
    entropy = -sum(n / total * math.log2(n / total) for n in unigrams.values()) if total else 0.0
    return {
        "total_tokens": total,
        "entropy_bits": entropy,
        "distinct_1": len(unigrams) / total if total else 0.0,
        "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
        "repetition_rate": repeated / trigrams if trigrams else 0.0,
    }


def evaluate(model: GPT, tokenizer: Tokenizer, held_out_text: str | None, prompts: Sequence[str] = (),
             params: SamplingParams | None = None, samples: int = 3) -> dict[str, Any]:
    """The full report. Prompts run one at a time, so that latencies are those a single request would see."""
    fast.enable(model)
    report: dict[str, Any] = {
        "model": {"parameters": model.num_parameters(), "vocab_size": model.config.vocab_size,
                  "context_length": model.config.context_length, "tokenizer": tokenizer.kind},
        "held_out": held_out_metrics(model, tokenizer, held_out_text) if held_out_text else None,
        "generation": None,
    }
    if prompts:
        params = params or SamplingParams(max_new_tokens=64, seed=0)
        generator = Generator(model, tokenizer)
        start = time.perf_counter()
        completions = [c for p in prompts for c in generator.generate(p, params)]
        wall = time.perf_counter() - start
        token_latency = [c.total_ms / max(c.completion_tokens, 1) for c in completions]
        report["generation"] = {
            "prompts": len(prompts),
            "completions": len(completions),
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(params).items()},
            "response_tokens": _summary([c.completion_tokens for c in completions]),
            "response_characters": _summary([len(c.text) for c in completions]),
            "finish_reasons": dict(Counter(c.finish_reason for c in completions)),
            "token_distribution": token_statistics([c.token_ids for c in completions]),
            "speed": {
                "tokens_per_s": sum(c.completion_tokens for c in completions) / max(wall, 1e-9),
                "ttft_ms": _percentiles([c.ttft_ms for c in completions]),
                "latency_ms": _percentiles([c.total_ms for c in completions]),
                "ms_per_token": _percentiles(token_latency),
            },
            "samples": [{"prompt": prompts[i], "completion": completions[i * params.num_sequences].text}
                        for i in range(min(len(prompts), samples))],
        }
    return report
