"""`python -m gateway.bench`: how fast the gateway answers and how many live event streams one process holds.

Two measurements:

* fan-out: a gateway process of its own (Kafka from LFZ_KAFKA_URL, or the embedded broker; SQLite and a local
  folder otherwise), N clients on `GET /api/v1/events`, timestamped facts produced straight to Kafka; the delivery
  latency (publish to a client's read) at increasing N, and the largest N whose p99 stays under the target.
* generation (with `--base-url` of a running stack with an agents worker): HTTP generate latency p50/p95 and the
  time to the first streamed token. A tiny model is trained first unless `--model` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from events import Topics, TrainProgress
from infra.kafka import ensure_topics
from infra.settings import load_settings


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _start_gateway(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "gateway", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError(f"the gateway exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if (await http.get(f"{url}/health", timeout=2)).status_code in (200, 503):
                    return process, url
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the gateway did not start")


async def _client(http: httpx.AsyncClient, sent: dict[str, float], latencies: list[float], ready: asyncio.Event,
                  counter: list[int]) -> None:
    async with http.stream("GET", "/api/v1/events") as response:
        counter[0] += 1
        if counter[0] >= counter[1]:
            ready.set()
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                started = sent.get(line[4:])
                if started is not None:
                    latencies.append(time.perf_counter() - started)


async def fanout_round(url: str, bootstrap: str, topics: Topics, clients: int, events: int,
                       rate: float) -> dict[str, Any]:
    sent: dict[str, float] = {}
    latencies: list[float] = []
    ready = asyncio.Event()
    counter = [0, clients]
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(30, read=None)) as http:
        tasks = [asyncio.create_task(_client(http, sent, latencies, ready, counter)) for _ in range(clients)]
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(0.5)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
        await producer.start()
        job = f"bench{uuid.uuid4().hex[:8]}"
        try:
            for seq in range(1, events + 1):
                fact = TrainProgress(job_id=job, seq=seq, producer="bench", kind="train", step=seq, max_iters=events,
                                     loss=1.0, learning_rate=1e-3, tokens_per_s=1.0, elapsed_s=0.0, progress=0.5)
                sent[f"{job}:{seq}"] = time.perf_counter()
                await producer.send(topics.job_events, fact.to_json(), key=job.encode())
                await asyncio.sleep(1 / rate)
            await asyncio.sleep(2.0)
        finally:
            await producer.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    expected = clients * events
    ms = [x * 1000 for x in latencies]
    return {"clients": clients, "events": events, "delivered": len(ms), "expected": expected,
            "p50_ms": round(percentile(ms, 50), 1), "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(max(ms), 1) if ms else None}


async def fanout(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    broker = None
    if not settings.kafka_url:
        from infra.broker import EmbeddedBroker

        broker = EmbeddedBroker(tempfile.mkdtemp(prefix="lfz-bench-"))
        broker.start()
        settings = settings.model_copy(update={"kafka_url": broker.url})
    prefix = f"lfz.bench.{uuid.uuid4().hex[:8]}."
    settings = settings.model_copy(update={"topic_prefix": prefix})
    await ensure_topics(settings)
    data_dir = tempfile.mkdtemp(prefix="lfz-bench-gw-")
    env = {**os.environ, "LFZ_KAFKA_URL": settings.kafka_url, "LFZ_TOPIC_PREFIX": prefix, "LFZ_API_KEYS": "",
           "LFZ_MAX_STREAMS_PER_KEY": "100000", "LFZ_LOG_LEVEL": "WARNING", "LFZ_DATA_DIR": data_dir,
           "LFZ_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir}/bench.db",
           "LFZ_OBJECT_STORE_URL": f"file://{data_dir}/objects"}
    process, url = await _start_gateway(env)
    rounds = []
    try:
        for clients in args.clients:
            result = await fanout_round(url, settings.kafka_bootstrap, Topics(prefix), clients, args.events,
                                        args.rate)
            result["ok"] = result["delivered"] == result["expected"] and result["p99_ms"] <= args.target_ms
            rounds.append(result)
            if not args.json:
                print(f"  {clients:5d} clients: p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms  "
                      f"delivered {result['delivered']}/{result['expected']}", file=sys.stderr)
            if not result["ok"]:
                break
    finally:
        process.terminate()
        process.wait(10)
        if broker is not None:
            broker.stop()
    held = max((r["clients"] for r in rounds if r["ok"]), default=0)
    return {"target_p99_ms": args.target_ms, "max_clients_within_target": held, "rounds": rounds}


async def generation(args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers, timeout=120) as http:
        model = args.model
        if model is None:
            text = "".join(f"the {a} cat sat on the {b} mat.\n" for a in ("red", "old") for b in ("blue", "warm")) * 20
            created = (await http.post("/api/v1/models", json={
                "name": f"bench-{uuid.uuid4().hex[:6]}", "dataset": {"text": text},
                "hyperparameters": {"preset": "tiny", "max_iters": 50}})).json()
            model = created["model_id"]
            for _ in range(600):
                status = (await http.get(f"/api/v1/models/{model}")).json().get("status")
                if status == "completed":
                    break
                if status in ("failed", "cancelled"):
                    return {"skipped": f"training the bench model ended {status}"}
                await asyncio.sleep(0.2)
            else:
                return {"skipped": "no agents worker trained the bench model within 120 s"}
        body = {"prompt": "the ", "max_length": args.tokens, "temperature": 0}
        await http.post(f"/api/v1/models/{model}/generate", json=body)  # warm the agents' model cache
        latencies, ttfts = [], []
        for _ in range(args.requests):
            started = time.perf_counter()
            response = await http.post(f"/api/v1/models/{model}/generate", json=body)
            response.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
        for _ in range(args.requests):
            started = time.perf_counter()
            async with http.stream("POST", f"/api/v1/models/{model}/generate", json={**body, "stream": True}) as r:
                async for line in r.aiter_lines():
                    if line == "event: TokensGenerated":
                        ttfts.append((time.perf_counter() - started) * 1000)
                        break
    return {"model": model, "requests": args.requests, "new_tokens": args.tokens,
            "latency_p50_ms": round(percentile(latencies, 50), 1), "latency_p95_ms": round(percentile(latencies, 95), 1),
            "ttft_p50_ms": round(percentile(ttfts, 50), 1), "ttft_p95_ms": round(percentile(ttfts, 95), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")],
                        default=[10, 50, 100, 250, 500, 1000], help="client counts to try, increasing")
    parser.add_argument("--events", type=int, default=50, help="facts published per round")
    parser.add_argument("--rate", type=float, default=20.0, help="facts per second")
    parser.add_argument("--target-ms", type=float, default=100.0, help="p99 delivery latency to stay under")
    parser.add_argument("--base-url", help="a running gateway with agents, for the generation figures")
    parser.add_argument("--api-key")
    parser.add_argument("--model", help="a trained model's id (default: train a tiny one)")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per generate request")
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}
    if not args.skip_fanout:
        report["fanout"] = asyncio.run(fanout(args))
    if args.base_url:
        report["generation"] = asyncio.run(generation(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        fan = report.get("fanout")
        if fan:
            print(f"SSE fan-out: {fan['max_clients_within_target']} clients within p99 {fan['target_p99_ms']:g} ms")
        gen = report.get("generation")
        if gen:
            print(f"generation: {json.dumps(gen)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
