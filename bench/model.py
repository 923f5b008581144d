"""Benchmarks, the one part of model/ that reads a file (`--data`).

    python -m bench model train --data FILE --preset cpu-baby --tokenizer char --json
    python -m bench model generate --preset cpu-baby --tokens 500 --json
    python -m bench model steps --variant wide:mlp_ratio=4 --variant narrow:mlp_ratio=1
    python -m bench model serve --concurrency 1,8,32,64,128 --tokens 128 --json   (bench/serve.py)

`train` trains on the file (first 90% train, last 10% validate) and reports the loss over the whole validation
split; `wall_s` covers everything from reading the file to that final loss. `generate` times sampling of
`--tokens` new tokens from random weights (seeded; `--train-iters` trains briefly first), one sequence.
`steps` compares the cost of a training step between variants of a preset: their steps alternate in one process,
so that a shared machine's changing load falls on all of them alike (`attention=sdpa` as an override turns the
CPU attention function of model/fast/attention.py off for that variant, `fast=off` every fast path).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import torch

from bench import serve
from model import fast
from model.config import ConfigError, resolve_hyperparameters
from model.data import prepare_corpus
from model.device import configure_threads, keep_freed_memory, pick_device
from model.evaluate import sequence_nats
from model.generate import Generator, SamplingParams
from model.gpt import GPT
from model.tokenizers import train_tokenizer
from model.trainer import Callbacks, StepInfo, Trainer, ValInfo

# Printable ASCII minus a few: a 65-symbol alphabet, the size of Shakespeare's, for runs without --data.
_DEFAULT_ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))[:64]


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    hp: dict[str, Any] = {"preset": args.preset}
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(key, "expected KEY=VALUE")
        hp[key] = _parse_value(raw)
    if args.max_iters is not None:
        hp["max_iters"] = args.max_iters
    return hp


def _environment(device: torch.device, threads: int) -> dict[str, Any]:
    return {"device": str(device), "threads": threads, "torch": torch.__version__, "machine": platform.machine(),
            "cpu": platform.processor() or platform.machine()}


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    threads = configure_threads(args.threads)
    keep_freed_memory()
    device = pick_device(args.device)
    model_cfg, train_cfg = resolve_hyperparameters(_overrides(args))
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    tokenizer = train_tokenizer(args.tokenizer, text)
    train_ids, val_ids = prepare_corpus(text, tokenizer, train_cfg.val_fraction)
    steps: list[StepInfo] = []
    validated: set[int] = set()

    def on_step(info: StepInfo) -> None:
        steps.append(info)
        if args.verbose:
            print(f"step {info.step} loss {info.loss:.4f} lr {info.lr:.2e} {info.tokens_per_s:.0f} tok/s",
                  file=sys.stderr)

    def on_validation(info: ValInfo) -> None:
        validated.add(info.step)
        if args.verbose:
            print(f"step {info.step} val {info.val_loss:.4f}", file=sys.stderr)

    load_before = os.getloadavg()
    trainer = Trainer(model_cfg.with_vocab(tokenizer.vocab_size), train_cfg, train_ids, val_ids,
                      Callbacks(on_step=on_step, on_validation=on_validation), device=device, tokenizer=tokenizer)
    result = trainer.run()
    nats, count = sequence_nats(trainer.model, val_ids)
    wall = time.perf_counter() - start
    # ms per iteration over each reporting interval without a validation in it: the machine is shared, so the
    # fastest intervals show the cost of a step on a quiet machine, the median a typical one.
    intervals = sorted(1000 * (b.elapsed_s - a.elapsed_s) / (b.step - a.step) for a, b in zip(steps, steps[1:])
                       if not any(a.step <= v < b.step for v in validated))
    return {
        "benchmark": "train",
        "data": args.data,
        "preset": args.preset,
        "tokenizer": args.tokenizer,
        "vocab_size": tokenizer.vocab_size,
        "parameters": trainer.model.num_parameters(),
        "iters": result.step,
        "val_loss": nats / count,  # over the whole validation split
        "val_loss_estimate": result.val_loss,  # the trainer's last estimate (eval_iters random batches)
        "train_loss": result.train_loss,
        "wall_s": wall,
        "train_s": result.wall_s,
        "ms_per_iter": 1000 * result.wall_s / max(result.step, 1),
        "tokens_per_s": result.tokens_per_s,
        "ms_per_iter_median": statistics.median(intervals) if intervals else None,
        "ms_per_iter_best": intervals[0] if intervals else None,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "hyperparameters": {**vars(model_cfg), **vars(train_cfg)},
        **_environment(device, threads),
    }


def bench_generate(args: argparse.Namespace) -> dict[str, Any]:
    # One sequence decodes fastest on one thread: its kernels are too small to share out.
    threads = configure_threads(args.threads or 1)
    device = pick_device(args.device)
    model_cfg, train_cfg = resolve_hyperparameters(_overrides(args))
    text = _DEFAULT_ALPHABET
    if args.data:
        with open(args.data, encoding="utf-8") as f:
            text = f.read()
    tokenizer = train_tokenizer(args.tokenizer, text)
    model_cfg = model_cfg.with_vocab(tokenizer.vocab_size)
    weights = "random (seed 0)"
    if args.train_iters and args.data:
        train_ids, val_ids = prepare_corpus(text, tokenizer, train_cfg.val_fraction)
        trainer = Trainer(model_cfg, replace(train_cfg, max_iters=args.train_iters), train_ids, val_ids,
                          device=device, tokenizer=tokenizer)
        trainer.run()
        model, weights = trainer.model, f"trained {args.train_iters} iterations on {args.data}"
    else:
        torch.manual_seed(0)
        model = GPT(model_cfg).to(device)
    generator = Generator(model, tokenizer, use_cache=not args.no_cache)
    params = SamplingParams(max_new_tokens=args.tokens, temperature=args.temperature, top_k=args.top_k, seed=0,
                            ignore_eot=True, num_sequences=args.batch)
    generator.generate(args.prompt, SamplingParams(max_new_tokens=8, seed=0))  # warm-up
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        stamps = [time.perf_counter() for _ in generator.stream(args.prompt, params)]
        runs.append((start, stamps))
    # Report the fastest repetition: the machine is shared, the slowest runs measure the neighbours.
    start, stamps = min(runs, key=lambda r: r[1][-1] - r[0])
    total = stamps[-1] - start
    gaps = [b - a for a, b in zip(stamps[::args.batch], stamps[args.batch::args.batch])]
    return {
        "benchmark": "generate",
        "preset": args.preset,
        "weights": weights,
        "kv_cache": not args.no_cache,
        "tokens": len(stamps),
        "batch": args.batch,
        "tokens_per_s": len(stamps) / total,
        "ms_per_token": 1000 * sum(gaps) / max(len(gaps), 1),
        "ttft_ms": 1000 * (stamps[0] - start),
        "wall_s": total,
        "repeats": args.repeats,
        "all_tokens_per_s": [len(s) / (s[-1] - t) for t, s in runs],
        **_environment(device, threads),
    }


def bench_steps(args: argparse.Namespace) -> dict[str, Any]:
    threads = configure_threads(args.threads)
    keep_freed_memory()
    device = pick_device(args.device)
    torch.manual_seed(0)
    ids = torch.randint(len(_DEFAULT_ALPHABET), (20_000,))  # random text: a step costs the same on any
    variants = {}
    for spec in args.variant or ["preset:"]:
        name, _, overrides = spec.partition(":")
        hp = _overrides(argparse.Namespace(preset=args.preset, max_iters=None,
                                           set=[kv for kv in overrides.split(",") if kv]))
        sdpa = hp.pop("attention", "fused") == "sdpa"
        fast_paths = str(hp.pop("fast", "on")).lower() not in ("off", "false", "0")
        model_cfg, train_cfg = resolve_hyperparameters(hp)
        trainer = Trainer(model_cfg.with_vocab(len(_DEFAULT_ALPHABET)), train_cfg, ids, ids, device=device,
                          fast_paths=fast_paths)
        if fast_paths:  # as Trainer.run() trains
            fast.enable(trainer.model, attention=not sdpa, bf16=trainer.bf16)
        variants[name] = (trainer, [])
    for i in range(args.warmup + args.steps):
        for trainer, times in variants.values():
            start = time.perf_counter()
            trainer.train_step().item()  # .item() waits for the step on an accelerator
            if i >= args.warmup:
                times.append(1000 * (time.perf_counter() - start))
    report: dict[str, Any] = {"benchmark": "steps", "preset": args.preset, "steps": args.steps, "variants": {}}
    for name, (*_, times) in variants.items():
        times.sort()
        report["variants"][name] = {"ms_min": times[0], "ms_p20": times[len(times) // 5],
                                    "ms_p50": statistics.median(times)}
    return {**report, **_environment(device, threads)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench model", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "generate", "steps", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--preset", default="cpu-baby")
        p.add_argument("--tokenizer", default="char", choices=("char", "word", "bpe"))
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="hyperparameter override (repeatable)")
        p.add_argument("--max-iters", type=int)
        p.add_argument("--threads", type=int,
                       help="torch threads (default: train: every core this process may use; generate: 1)")
        p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when present)")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--verbose", action="store_true", help="progress on stderr")
    sub.choices["train"].add_argument("--data", required=True)
    g = sub.choices["generate"]
    g.add_argument("--data", help="text to build the tokenizer from (and to train on with --train-iters)")
    g.add_argument("--tokens", type=int, default=500)
    g.add_argument("--prompt", default="\n")
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--top-k", type=int, default=200)
    g.add_argument("--batch", type=int, default=1, help="sequences generated together")
    g.add_argument("--train-iters", type=int, default=0)
    g.add_argument("--repeats", type=int, default=5)
    g.add_argument("--no-cache", action="store_true", help="recompute the whole window for every token")
    st = sub.choices["steps"]
    st.add_argument("--variant", action="append", metavar="NAME:KEY=VALUE,...",
                    help="a variant of the preset (repeatable); the preset itself when none is given")
    st.add_argument("--steps", type=int, default=300, help="timed steps of each variant")
    st.add_argument("--warmup", type=int, default=20)
    serve.add_arguments(sub.choices["serve"])
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            report = serve.bench_serve(args, _overrides(args))
        else:
            report = {"train": bench_train, "generate": bench_generate, "steps": bench_steps}[args.command](args)
    except ConfigError as e:
        parser.error(str(e))
    if args.json:
        print(json.dumps(report, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))
    else:
        for key, value in report.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
