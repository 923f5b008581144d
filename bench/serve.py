"""`python -m bench model serve`: the batching engine alone (no Kafka), many generations at once.

    python -m bench model serve --concurrency 1,8,32,64,128 --tokens 128 --json

At each level, that many requests (prompts of a few tokens, each its own seed) are submitted at once to one
engine with as many slots, and stepped to the end. Reported per level: aggregate tokens/s and each request's time
to first token from its submission (p50, p99), the median of `--repeats` runs (each run listed too). In the same
process, first: one sequence through `Generator` (the one-at-a-time path), the baseline of `speedup`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from bench.measure import percentiles
from model import fast
from model.config import resolve_hyperparameters
from model.device import configure_threads, pick_device
from model.engine import Engine
from model.generate import Generator, SamplingParams
from model.gpt import GPT
from model.tokenizers import train_tokenizer

PROMPTS = ("ROMEO:", "JULIET: O", "First Citizen:\nBefore", "\n", "KING HENRY:", "Was ever")


def _level(model: GPT, tokenizer: Any, concurrency: int, tokens: int, temperature: float) -> dict[str, float]:
    engine = Engine(model, tokenizer, slots=concurrency)
    first: dict[int, float] = {}
    submitted: dict[int, float] = {}
    for i in range(concurrency):
        params = SamplingParams(max_new_tokens=tokens, temperature=temperature, seed=i, ignore_eot=True)
        submitted[i] = time.perf_counter()
        engine.submit(PROMPTS[i % len(PROMPTS)], params,
                      lambda token, i=i: first.setdefault(i, time.perf_counter()) if token is not None else None)
    start = min(submitted.values())
    while engine.busy:
        engine.step()
    wall = time.perf_counter() - start
    ttft = percentiles([1000 * (first[i] - submitted[i]) for i in range(concurrency)])
    return {"tokens_per_s": engine.tokens_made / wall, "ttft_ms_p50": ttft["p50"], "ttft_ms_p99": ttft["p99"]}


def bench_serve(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    threads = configure_threads(args.threads)
    device = pick_device(args.device)
    text = open(args.data, encoding="utf-8").read() if args.data else "".join(map(chr, range(32, 127))) * 4
    tokenizer = train_tokenizer(args.tokenizer, text)
    model_cfg, _ = resolve_hyperparameters(overrides)
    torch.manual_seed(0)
    model = GPT(model_cfg.with_vocab(tokenizer.vocab_size)).to(device).eval()
    baseline = Generator(model, tokenizer)
    one = SamplingParams(max_new_tokens=args.tokens, temperature=args.temperature, seed=0, ignore_eot=True)
    baseline.generate(PROMPTS[0], SamplingParams(max_new_tokens=8, seed=0))  # warm-up
    singles = [baseline.generate(PROMPTS[0], one)[0].tokens_per_s for _ in range(args.repeats)]
    fast.disable(model)  # the engine computes with the readable modules and its own decoding step
    levels = []
    for concurrency in args.concurrency:
        runs = [_level(model, tokenizer, concurrency, args.tokens, args.temperature) for _ in range(args.repeats)]
        best = statistics.median(r["tokens_per_s"] for r in runs)
        median_run = min(runs, key=lambda r: abs(r["tokens_per_s"] - best))
        levels.append({"concurrency": concurrency, **median_run, "speedup": median_run["tokens_per_s"] /
                       statistics.median(singles), "runs": runs})
    return {"benchmark": "serve", "preset": overrides.get("preset", "cpu-baby"), "tokens": args.tokens,
            "temperature": args.temperature, "one_sequence_tokens_per_s": statistics.median(singles),
            "one_sequence_runs": singles, "levels": levels, "threads": threads, "device": str(device),
            "torch": torch.__version__}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="text to build the tokenizer from (default: printable ASCII)")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64, 128],
                   help="comma-separated numbers of generations at once")
    p.add_argument("--tokens", type=int, default=128, help="new tokens per generation")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--repeats", type=int, default=3)
