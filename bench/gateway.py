"""`python -m bench gateway`: how many live event streams one gateway process holds, and how fast it answers.

It starts what it measures (bench.stack): the Kafka of LFZ_KAFKA_URL or the embedded broker, the database and
object store of the settings or SQLite and a folder in a temporary folder, on a topic prefix of its own.

* fan-out: one gateway process (and no worker), N followers of `GET /api/v1/events` and timestamped facts produced
  straight to Kafka; the delivery latency (produce call to a follower reading the event's `id:` line) at each N of
  `--clients`, the largest N whose every event arrived with p99 within `--target-ms`, and the gateway's memory and
  CPU time. The followers run on this machine too, in `--followers-per-process`-sized processes of their own
  (bench followers): their CPU time is reported beside the gateway's, since on a small machine they compete.
* generation: a gateway and one agents worker (or the running stack at `--base-url`): HTTP generate latency
  p50/p95 and the time to the first streamed token; a tiny model is trained first unless `--model` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import httpx
import psutil
from aiokafka import AIOKafkaProducer

from events import Topics, TrainProgress
from bench.measure import ProcessMonitor, percentiles
from bench.stack import BenchStack, describe_servers
from infra.settings import Settings, load_settings
from infra.kafka import client_options

FEED = "/api/v1/events"


def _cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


class FollowerProcesses:
    """`clients` followers split over processes of at most `per_process` connections each (bench followers)."""

    def __init__(self, url: str, clients: int, per_process: int):
        parsed = urlparse(url)
        sizes = [clients // math.ceil(clients / per_process)] * math.ceil(clients / per_process)
        for i in range(clients - sum(sizes)):
            sizes[i] += 1
        self.popens = [subprocess.Popen(
            [sys.executable, "-m", "bench.followers", parsed.hostname or "127.0.0.1", str(parsed.port), FEED,
             str(size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for size in sizes]
        self.processes = [psutil.Process(p.pid) for p in self.popens]

    def ready(self) -> tuple[int, int]:
        """Block until every process has opened its connections: (connected, failed)."""
        connected = failed = 0
        for popen in self.popens:
            line = popen.stdout.readline().split()  # type: ignore[union-attr]
            if not line or line[0] != "ready":
                raise RuntimeError(f"a follower process did not get ready (exit code {popen.poll()})")
            connected, failed = connected + int(line[1]), failed + int(line[2])
        return connected, failed

    def results(self) -> tuple[dict[str, list[float]], dict[str, int]]:
        arrivals: dict[str, list[float]] = {}
        errors: dict[str, int] = {}
        for popen in self.popens:
            popen.stdin.write("stop\n")  # type: ignore[union-attr]
            popen.stdin.flush()  # type: ignore[union-attr]
        for popen in self.popens:
            out, _ = popen.communicate(timeout=60)
            report = json.loads(out.strip().splitlines()[-1])
            for event_id, times in report["arrivals"].items():
                arrivals.setdefault(event_id, []).extend(times)
            for error, count in report["errors"].items():
                errors[error] = errors.get(error, 0) + count
        return arrivals, errors

    def kill(self) -> None:
        for popen in self.popens:
            if popen.poll() is None:
                popen.kill()
                popen.wait()


async def _subscribers(http: httpx.AsyncClient) -> int:
    """The gateway's own count of live-feed subscribers: a follower has its headers before it is subscribed."""
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith("lfz_gateway_live_subscribers "):
            return int(float(line.split()[1]))
    raise RuntimeError("the gateway's /metrics has no lfz_gateway_live_subscribers")


async def fanout_round(stack: BenchStack, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    gateway = psutil.Process(stack.processes()["gateway"])
    followers = FollowerProcesses(stack.url, clients, args.followers_per_process)
    sent: dict[str, float] = {}
    try:
        connected, failed = await asyncio.to_thread(followers.ready)
        async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
            deadline = time.monotonic() + 60
            while await _subscribers(http) < connected:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not subscribe {connected} followers within 60 s")
                await asyncio.sleep(0.1)
        producer = AIOKafkaProducer(**client_options(stack.settings), linger_ms=0, acks=1)
        await producer.start()
        job = f"bench{uuid.uuid4().hex[:8]}"
        topic = Topics(stack.settings.topic_prefix).job_events
        gateway_cpu, followers_cpu = gateway.cpu_times(), _cpu_s(followers.processes)
        try:
            started = time.monotonic()
            for seq in range(1, args.events + 1):
                await asyncio.sleep(max(0.0, started + (seq - 1) / args.rate - time.monotonic()))
                fact = TrainProgress(job_id=job, seq=seq, producer="bench", kind="train", step=seq,
                                     max_iters=args.events, loss=1.0, learning_rate=1e-3, tokens_per_s=1.0,
                                     elapsed_s=0.0, progress=seq / args.events)
                sent[f"{job}:{seq}"] = time.monotonic()
                await producer.send(topic, fact.to_json(), key=job.encode())
            await producer.flush()
            await asyncio.sleep(args.drain_s)  # an event later than this counts as not delivered
        finally:
            await producer.stop()
        after = gateway.cpu_times()
        gateway_cpu_s = after.user + after.system - gateway_cpu.user - gateway_cpu.system
        followers_cpu_s = _cpu_s(followers.processes) - followers_cpu
        rss_mb = gateway.memory_info().rss / 2**20  # while every follower is still connected
        arrivals, errors = await asyncio.to_thread(followers.results)
    finally:
        followers.kill()
    ms = [(t - sent[event_id]) * 1000 for event_id, times in arrivals.items() if event_id in sent for t in times]
    delivered = len(ms)
    expected = clients * args.events
    stats = percentiles(ms)
    return {"clients": clients, "connected": connected, "failed_connections": failed, "connect_errors": errors,
            "events": args.events, "rate_per_s": args.rate, "delivered": delivered, "expected": expected,
            "p50_ms": stats.get("p50"), "p95_ms": stats.get("p95"), "p99_ms": stats.get("p99"),
            "max_ms": max(ms) if ms else None, "gateway_rss_mb": rss_mb, "gateway_cpu_s": gateway_cpu_s,
            "gateway_cpu_us_per_delivery": gateway_cpu_s / delivered * 1e6 if delivered else None,
            "follower_processes": len(followers.popens), "followers_cpu_s": followers_cpu_s,
            "ok": bool(ms) and delivered == expected and stats["p99"] <= args.target_ms}


def fanout(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    extra = {"LFZ_MAX_STREAMS_PER_KEY": str(max(args.clients) + 100)}  # one anonymous caller holds every stream
    with BenchStack(settings, workers=0, gateway=True, name="bench-gateway", extra_env=extra) as stack:
        servers = describe_servers(stack.settings)
        idle_rss = psutil.Process(stack.processes()["gateway"]).memory_info().rss / 2**20
        for clients in args.clients:
            result = asyncio.run(fanout_round(stack, clients, args))
            rounds.append(result)
            print(f"  {clients:5d} followers: p50 {result['p50_ms'] or math.nan:7.1f} ms  "
                  f"p99 {result['p99_ms'] or math.nan:7.1f} ms  delivered {result['delivered']}/{result['expected']}  "
                  f"gateway {result['gateway_rss_mb']:.0f} MiB, {result['gateway_cpu_s']:.1f} cpu-s", file=sys.stderr)
            if not result["delivered"]:
                break  # nothing arrived at this size: a larger one would measure nothing either
    held = max((r["clients"] for r in rounds if r["ok"]), default=0)
    return {"servers": servers, "path": FEED, "target_p99_ms": args.target_ms, "max_clients_tried": max(args.clients),
            "max_clients_within_target": held, "gateway_idle_rss_mb": idle_rss,
            "followers_ran_on": f"this machine ({os.cpu_count()} cores, shared with the gateway), "
                                f"up to {args.followers_per_process} connections per process",
            "largest_round": rounds[-1] if rounds else None, "rounds": rounds}


async def generation(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as http:
        model = args.model
        if model is None:
            text = "".join(f"the {a} cat sat on the {b} mat.\n" for a in ("red", "old") for b in ("blue", "warm")) * 20
            created = (await http.post("/api/v1/models", json={
                "name": f"bench-{uuid.uuid4().hex[:6]}", "dataset": {"text": text},
                "hyperparameters": {"preset": args.preset, "max_iters": args.train_iters}})).json()
            model = created["model_id"]
            deadline = time.monotonic() + 300
            while (status := (await http.get(f"/api/v1/models/{model}")).json().get("status")) != "completed":
                if status in ("failed", "cancelled"):
                    raise RuntimeError(f"training the bench model ended {status}")
                if time.monotonic() > deadline:
                    raise RuntimeError("no agents worker trained the bench model within 300 s")
                await asyncio.sleep(0.2)
        body = {"prompt": "the ", "max_length": args.tokens, "temperature": 0}
        (await http.post(f"/api/v1/models/{model}/generate", json=body)).raise_for_status()  # loads the model
        latencies, ttfts = [], []
        for _ in range(args.requests):
            started = time.perf_counter()
            response = await http.post(f"/api/v1/models/{model}/generate", json=body)
            response.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
        for _ in range(args.requests):
            started = time.perf_counter()
            async with http.stream("POST", f"/api/v1/models/{model}/generate", json={**body, "stream": True}) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if line == "event: TokensGenerated":
                        ttfts.append((time.perf_counter() - started) * 1000)
                        break
        streaming = [await openai_streams(http, model, args.tokens, clients) for clients in args.openai_clients]
    return {"model": model, "requests": args.requests, "new_tokens": args.tokens,
            "latency_ms": percentiles(latencies), "ttft_ms": percentiles(ttfts), "openai_streaming": streaming}


async def openai_streams(http: httpx.AsyncClient, model: str, tokens: int, clients: int) -> dict[str, Any]:
    """`clients` streaming `/v1/completions` at once (each its own seed): aggregate tokens/s (from each stream's
    usage) and each client's time to its first text."""
    async def one(seed: int) -> tuple[int, float, float]:
        body = {"model": model, "prompt": "the ", "max_tokens": tokens, "stream": True, "seed": seed,
                "stream_options": {"include_usage": True}}
        started, first, made = time.perf_counter(), None, 0
        async with http.stream("POST", "/v1/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if first is None and any(c.get("text") for c in chunk.get("choices", [])):
                    first = time.perf_counter()
                if chunk.get("usage"):
                    made = chunk["usage"]["completion_tokens"]
        return made, ((first or time.perf_counter()) - started) * 1000, time.perf_counter()

    started = time.perf_counter()
    results = await asyncio.gather(*(one(seed) for seed in range(clients)))
    wall = max(end for *_, end in results) - started
    return {"clients": clients, "tokens": sum(r[0] for r in results), "tokens_per_s": sum(r[0] for r in results) / wall,
            "first_text_ms": percentiles([r[1] for r in results])}


def generation_on_own_stack(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    # One key (none) sends every stream: its per-key limits are lifted to the round's size, as for that many users.
    many = str(max(args.openai_clients) + 1)
    with BenchStack(settings, workers=1, gateway=True, name="bench-generate",
                    extra_env={"LFZ_MAX_GENERATIONS_PER_KEY": many, "LFZ_MAX_STREAMS_PER_KEY": many}) as stack:
        with ProcessMonitor(stack.processes()) as monitor:
            result = asyncio.run(generation(stack.url, args))
        return {**result, "servers": describe_servers(stack.settings), "processes": monitor.report()}


def _counts(raw: str) -> list[int]:
    try:
        counts = [int(part) for part in raw.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {raw!r}") from None
    if not counts or any(c < 1 for c in counts) or counts != sorted(counts):
        raise argparse.ArgumentTypeError(f"expected increasing counts of at least 1, got {raw!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=_counts, default=[10, 50, 100, 250, 500, 1000],
                        help="follower counts to try, increasing (default 10,50,100,250,500,1000)")
    parser.add_argument("--events", type=int, default=50, help="facts published per round")
    parser.add_argument("--rate", type=float, default=20.0, help="facts per second")
    parser.add_argument("--drain-s", type=float, default=2.0, help="wait after the last fact before counting")
    parser.add_argument("--target-ms", type=float, default=100.0, help="p99 delivery latency to stay under")
    parser.add_argument("--followers-per-process", type=int, default=500, help="connections per follower process")
    parser.add_argument("--base-url", help="measure generation on this running stack instead of starting one")
    parser.add_argument("--api-key", help="for --base-url")
    parser.add_argument("--model", help="a trained model's id (default: train a tiny one)")
    parser.add_argument("--requests", type=int, default=20, help="generate requests of each kind")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per generate request")
    parser.add_argument("--openai-clients", type=_counts, default=[1, 64],
                        help="streaming /v1/completions clients at once, one round per count")
    parser.add_argument("--preset", default="tiny", help="the preset of the model trained for generation")
    parser.add_argument("--train-iters", type=int, default=50)
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args(argv)
    for name in ("events", "rate", "followers_per_process", "requests", "tokens", "target_ms"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.drain_s < 0:
        parser.error(f"--drain-s must not be negative, got {args.drain_s}")
    settings = load_settings()
    report: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}
    if not args.skip_fanout:
        report["fanout"] = fanout(settings, args)
    if not args.skip_generation:
        if args.base_url:
            report["generation"] = {**asyncio.run(generation(args.base_url, args)), "base_url": args.base_url}
        else:
            report["generation"] = generation_on_own_stack(settings, args)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
