"""`python -m bench distributed`: one training process against several (DDP over gloo, or NCCL on GPUs) for the same
global batch, on this machine.

    python -m bench distributed --data FILE --preset cpu-baby --steps 300 --processes 2 --runs 3 --json

Each run trains `--steps` steps of the preset from the same seed, once on one process with every core and once on
`--processes` ranks with the cores shared out, alternating, so that a shared machine's load falls on both alike. It
reports the training tokens/s after the first 20 steps (the ranks' sum: the global batch's tokens), the ratio, and
the largest difference between the two loss curves at equal steps. With `--set grad_accum=N` (a multiple of the
processes) the ranks split whole micro-batches; otherwise rows of each.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.config import resolve_hyperparameters
from model.data import prepare_corpus
from model.device import available_cores, configure_threads, keep_freed_memory
from model.distributed import World, backend_for
from model.tokenizers import train_tokenizer
from model.trainer import StepInfo, Trainer

WARMUP_STEPS = 20


def _train(text: str, hp: dict[str, Any], threads: int, world: World, device: str) -> dict[str, Any]:
    configure_threads(threads)
    keep_freed_memory()
    model_config, train_config = resolve_hyperparameters(hp)
    tokenizer = train_tokenizer("char", text)
    train_ids, val_ids = prepare_corpus(text, tokenizer, train_config.val_fraction)
    steps: list[tuple[StepInfo, float]] = []

    class Timing:
        def on_step(self, info: StepInfo) -> None:
            steps.append((info, time.perf_counter()))

    trainer = Trainer(model_config.with_vocab(tokenizer.vocab_size), train_config, train_ids, val_ids, Timing(),
                      device=device, tokenizer=tokenizer, world=world)
    result = trainer.run()
    tokens_per_step = train_config.batch_size * train_config.grad_accum * trainer.sampler.window
    (first, t0), (last, t1) = steps[WARMUP_STEPS - 1], steps[-1]
    return {"tokens_per_s": (last.step - first.step) * tokens_per_step / (t1 - t0),
            "losses": [info.loss for info, _ in steps], "val_loss": result.val_loss}


def _rank(rank: int, size: int, port: int, text: str, hp: dict[str, Any], threads: int, out: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = f"cuda:{rank}" if torch.cuda.is_available() else "cpu"
    dist.init_process_group(backend_for(torch.device(device)), rank=rank, world_size=size,
                            timeout=timedelta(seconds=120))
    try:
        result = _train(text, hp, threads, World(rank, size), device)
        if rank == 0:
            out.put(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _ranked(text: str, hp: dict[str, Any], processes: int, threads: int) -> dict[str, Any]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    out = context.SimpleQueue()
    ranks = [context.Process(target=_rank, args=(rank, processes, port, text, hp, threads, out))
             for rank in range(processes)]
    for process in ranks:
        process.start()
    result = json.loads(out.get())
    for process in ranks:
        process.join(120)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench distributed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="training text (default: the standard library's pydoc topics)")
    parser.add_argument("--preset", default="cpu-baby")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.data:
        with open(args.data, encoding="utf-8") as f:
            text = f.read()
    else:
        from pydoc_data.topics import topics
        text = "\n".join(topics.values())
    hp: dict[str, Any] = {"preset": args.preset, "max_iters": args.steps, "eval_every": args.steps,
                          "log_every": 1, "checkpoint_every": 10**6}
    for item in args.set:
        key, _, raw = item.partition("=")
        hp[key] = json.loads(raw)
    cores = available_cores()
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    pairs = []
    for _ in range(args.runs):
        one = _train(text, hp, cores, World(), device)
        several = _ranked(text, hp, args.processes, max(1, cores // args.processes))
        gap = max(abs(a - b) for a, b in zip(one["losses"], several["losses"]))
        pairs.append({"one": one["tokens_per_s"], "several": several["tokens_per_s"],
                      "ratio": several["tokens_per_s"] / one["tokens_per_s"], "largest_loss_gap": gap,
                      "val_loss": [one["val_loss"], several["val_loss"]]})
    report = {"benchmark": "distributed", "preset": args.preset, "steps": args.steps, "processes": args.processes,
              "cores": cores, "device": device, "hyperparameters": hp, "runs": pairs,
              "ratio_median": statistics.median(p["ratio"] for p in pairs)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for index, pair in enumerate(pairs, 1):
            print(f"run {index}: 1 process {pair['one']:,.0f} tokens/s, {args.processes} processes "
                  f"{pair['several']:,.0f} tokens/s (x{pair['ratio']:.2f}); loss curves differ by at most "
                  f"{pair['largest_loss_gap']:.1e}; final validation {pair['val_loss'][0]:.4f} / "
                  f"{pair['val_loss'][1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
