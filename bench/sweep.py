"""`python -m bench sweep`: a sweep's wall time on two workers against one of its trials alone, and what early
stopping saves.

    python -m bench sweep --trials 8 --steps 1000 --json

On a stack of its own (`--workers` agents workers, one PyTorch thread each, and a gateway, on the servers the
settings name or the embedded defaults), through the HTTP API as a person does it: one training run of `tiny` alone
(submit to completion), then a random sweep of `--trials` such runs over the learning rate without early stopping,
then the same sweep with the median rule. The target is a sweep within 4.5x one trial alone for 8 trials on two
workers (both workers kept busy, the overhead of the sweep small); early stopping's saving is the training steps it
did not run.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.machine import machine
from bench.stack import BenchStack, describe_servers
from cli.client import Client
from infra.settings import load_settings

TEXT = "\n".join([
    "The model reads the text one character at a time and learns what comes next.",
    "A small network trained for a few steps already knows which letters follow a space.",
    "Validation text is held out, so the loss on it is an honest measure of what was learned.",
] * 150) + "\n"


def _one(client: Client, dataset_id: str, hp: dict[str, Any]) -> float:
    started = time.monotonic()
    created = client.create_model(f"alone-{int(started)}", dataset_id=dataset_id, hyperparameters=hp)
    job = client.wait_for_job(created["job_id"], timeout_s=600)
    assert job["status"] == "completed", job
    return time.monotonic() - started


def _sweep(client: Client, dataset_id: str, hp: dict[str, Any], trials: int, rule: str) -> dict[str, Any]:
    started = time.monotonic()
    submitted = client.create_sweep({
        "name": f"bench-{rule}-{int(started)}", "dataset": {"id": dataset_id}, "hyperparameters": hp,
        "space": {"learning_rate": {"min": 1e-4, "max": 1.0, "scale": "log"}}, "trials": trials, "seed": 1,
        "early_stopping": {"rule": rule, "min_step": max(50, hp["max_iters"] // 10), "min_trials": 2}})
    job = client.wait_for_job(submitted["job_id"], timeout_s=3600)
    while job["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.5)
        job = client.get_job(submitted["job_id"])
    wall = time.monotonic() - started
    assert job["status"] == "completed", job
    summary = job["result"]["summary"]
    return {"wall_s": round(wall, 2), "stopped": summary["stopped"], "steps_run": summary["steps_run"],
            "steps_planned": summary["steps_planned"], "best": job["result"]["best"]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000, help="each trial's training steps (tiny)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    hp = {"preset": "tiny", "max_iters": args.steps, "eval_every": max(25, args.steps // 20),
          "checkpoint_every": args.steps}
    base = load_settings()
    with BenchStack(base, workers=args.workers, gateway=True, name="sweep",
                    extra_env={"LFZ_TORCH_THREADS": "1", "LFZ_MAX_ACTIVE_JOBS_PER_KEY": "1000"}) as stack:
        with Client(stack.url, timeout=120) as client:
            dataset_id = client.upload_dataset(name="bench.txt", text=TEXT)["id"]
            _one(client, dataset_id, {**hp, "max_iters": 30})  # warm: the first job pays for imports and topics
            alone = [_one(client, dataset_id, hp) for _ in range(2)]
            plain = _sweep(client, dataset_id, hp, args.trials, "none")
            stopped = _sweep(client, dataset_id, hp, args.trials, "median")
            alone.append(_one(client, dataset_id, hp))
    one = sorted(alone)[len(alone) // 2]
    report = {
        "benchmark": "sweep", "trials": args.trials, "steps": args.steps, "workers": args.workers,
        "one_trial_s": [round(a, 2) for a in alone], "one_trial_median_s": round(one, 2),
        "sweep": plain, "sweep_ratio": round(plain["wall_s"] / one, 2),
        "early_stopping": stopped, "early_stopping_ratio": round(stopped["wall_s"] / one, 2),
        "steps_saved": 1 - stopped["steps_run"] / stopped["steps_planned"],
        "target_ratio": 4.5, "servers": describe_servers(base), "machine": machine(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"one trial alone: {one:.1f} s (runs {report['one_trial_s']})")
        print(f"{args.trials} trials on {args.workers} workers: {plain['wall_s']:.1f} s = {report['sweep_ratio']}x "
              f"(target <= 4.5x)")
        print(f"with median stopping: {stopped['wall_s']:.1f} s = {report['early_stopping_ratio']}x, "
              f"{stopped['stopped']} trials stopped, {100 * report['steps_saved']:.0f}% of the steps saved")
    return 0
