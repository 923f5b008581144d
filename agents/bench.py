"""`python -m agents.bench`: the pipeline's speed, measured through Kafka with real agents workers.

It starts what it measures: the embedded broker (or the Kafka of LFZ_KAFKA_URL), a database (SQLite in a temporary
folder, or LFZ_DATABASE_URL), an object store (a temporary folder, or LFZ_OBJECT_STORE_URL) and `--workers`
agents workers, all on a topic prefix of its own. Then:

* generate: end-to-end latency from producing a GenerateRequested to the first TokensGenerated and to the
  GenerationCompleted, one request at a time (p50/p95) and `--concurrency` at once (p50/p95/p99);
* projection: facts per second that the record agent writes to the database (synthetic TrainProgress facts);
* training: `--train-jobs` concurrent training jobs across the workers: throughput and how evenly they were shared;
* memory: resident memory of each worker process at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import func, select

from events import TERMINAL_TYPES, Topics, TrainProgress
from infra.broker import EmbeddedBroker
from infra.db import create_engine, sessionmaker
from infra.db.__main__ import migrate
from infra.db.tables import JobEventRow
from infra.kafka import ensure_topics, stop_consumer
from infra.settings import Settings, load_settings

CORPUS = "\n".join(f"Line {i}: the pipeline carries requests to the agents and facts back to the clients."
                   for i in range(400))


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]  # noqa: E731
    return {"p50": pick(50), "p95": pick(95), "p99": pick(99), "mean": statistics.fmean(values), "n": len(values)}


class Stack:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="lfz-bench-"))
        self.broker: EmbeddedBroker | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        base = load_settings()
        overrides: dict[str, Any] = {"topic_prefix": f"bench{uuid.uuid4().hex[:8]}.", "data_dir": self.tmp}
        if not base.kafka_url:
            self.broker = EmbeddedBroker(self.tmp)
            overrides["kafka_url"] = self.broker.start()
        if not base.database_url:
            overrides["database_url"] = f"sqlite+aiosqlite:///{self.tmp / 'lfz.db'}"
        if not base.object_store_url:
            overrides["object_store_url"] = (self.tmp / "objects").as_uri()
        self.settings: Settings = base.model_copy(update=overrides)
        self.topics = Topics(self.settings.topic_prefix)

    def env(self) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("LFZ_")}
        env.update(LFZ_KAFKA_URL=s.kafka_url, LFZ_DATABASE_URL=s.resolved_database_url,
                   LFZ_OBJECT_STORE_URL=s.resolved_object_store_url, LFZ_S3_ACCESS_KEY=s.s3_access_key,
                   LFZ_S3_SECRET_KEY=s.s3_secret_key, LFZ_BUCKET=s.bucket, LFZ_TOPIC_PREFIX=s.topic_prefix,
                   LFZ_DATA_DIR=str(self.tmp), LFZ_LOG_LEVEL="WARNING", LFZ_GENERATE_CONCURRENCY="8")
        return env

    async def start(self) -> None:
        await asyncio.to_thread(migrate, self.settings.resolved_database_url, True)
        await ensure_topics(self.settings)
        for i in range(self.args.workers):
            log = open(self.tmp / f"worker-{i}.log", "wb")
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "agents", "worker"], env={**self.env(), "LFZ_WORKER_ID": f"bench-{i}"},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in self.workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if self.broker is not None:
            self.broker.stop()


class Facts:
    """One consumer of the job-events topic from the start, recording when each fact of each job arrived."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.by_job: dict[str, list[tuple[float, dict]]] = {}
        self.changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(self.stack.topics.job_events, bootstrap_servers=self.stack.settings.kafka_bootstrap,
                                         group_id=None, auto_offset_reset="earliest")
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for message in self.consumer:
            fact = json.loads(message.value)
            self.by_job.setdefault(fact["job_id"], []).append((time.perf_counter(), fact))
            self.changed.set()

    async def until(self, job_id: str, timeout: float = 300) -> list[tuple[float, dict]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            facts = self.by_job.get(job_id, [])
            if any(f["type"] in TERMINAL_TYPES for _, f in facts):
                return facts
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 1.0)
            except TimeoutError:
                pass
        raise TimeoutError(f"job {job_id} did not end in {timeout}s")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await stop_consumer(self.consumer)


async def _send(producer: AIOKafkaProducer, topic: str, message: dict, key: str) -> float:
    started = time.perf_counter()
    await producer.send_and_wait(topic, json.dumps(message).encode(), key=key.encode())
    return started


async def train_model(stack: Stack, producer: AIOKafkaProducer, facts: Facts, name: str, iters: int) -> dict:
    job_id = f"train-{uuid.uuid4().hex[:8]}"
    await _send(producer, stack.topics.train_requested,
                {"type": "TrainRequested", "job_id": job_id, "model_name": name, "dataset": {"text": CORPUS},
                 "hyperparameters": {"preset": "tiny", "max_iters": iters}}, job_id)
    end = (await facts.until(job_id))[-1][1]
    if end["type"] != "TrainCompleted":
        raise RuntimeError(f"training failed: {end}")
    return end


async def one_generation(stack: Stack, producer: AIOKafkaProducer, facts: Facts, model: str, tokens: int) -> dict:
    request_id = f"gen-{uuid.uuid4().hex[:10]}"
    started = await _send(producer, stack.topics.generate_requested,
                          {"type": "GenerateRequested", "request_id": request_id, "model_name": model,
                           "prompt": "Line 7: the", "max_tokens": tokens, "seed": 1}, request_id)
    arrived = await facts.until(request_id)
    if arrived[-1][1]["type"] != "GenerationCompleted":
        raise RuntimeError(f"generation failed: {arrived[-1][1]}")
    first = next(t for t, f in arrived if f["type"] == "TokensGenerated")
    done = arrived[-1]
    return {"first_ms": (first - started) * 1000, "done_ms": (done[0] - started) * 1000,
            "tokens": done[1].get("completion_tokens", 0)}


async def generation(stack: Stack, producer: AIOKafkaProducer, facts: Facts, model: str) -> dict:
    args = stack.args
    await one_generation(stack, producer, facts, model, args.tokens)  # loads the model into the cache
    sequential = [await one_generation(stack, producer, facts, model, args.tokens) for _ in range(args.requests)]
    started = time.perf_counter()
    concurrent = await asyncio.gather(*(one_generation(stack, producer, facts, model, args.tokens)
                                        for _ in range(args.concurrency)))
    wall = time.perf_counter() - started
    return {
        "tokens_per_request": args.tokens,
        "sequential": {"requests": len(sequential),
                       "first_token_ms": percentiles([r["first_ms"] for r in sequential]),
                       "completed_ms": percentiles([r["done_ms"] for r in sequential])},
        "concurrent": {"requests": len(concurrent), "wall_s": wall,
                       "first_token_ms": percentiles([r["first_ms"] for r in concurrent]),
                       "completed_ms": percentiles([r["done_ms"] for r in concurrent]),
                       "tokens_per_s": sum(r["tokens"] for r in concurrent) / wall},
    }


async def projection(stack: Stack, producer: AIOKafkaProducer, count: int) -> dict:
    job_id = f"proj-{uuid.uuid4().hex[:8]}"
    engine = create_engine(stack.settings.resolved_database_url)
    started = time.perf_counter()
    for seq in range(1, count + 1):
        fact = TrainProgress(job_id=job_id, seq=seq, producer="bench", kind="train", step=seq, max_iters=count,
                             loss=1.0, learning_rate=1e-3, tokens_per_s=1.0, elapsed_s=1.0, progress=seq / count)
        await producer.send(stack.topics.job_events, fact.to_json(), key=job_id.encode())
    await producer.flush()
    produced = time.perf_counter() - started
    async with sessionmaker(engine)() as session:
        while True:
            recorded = await session.scalar(select(func.count()).select_from(JobEventRow)
                                            .where(JobEventRow.job_id == job_id))
            if recorded >= count:
                break
            await asyncio.sleep(0.05)
    wall = time.perf_counter() - started
    await engine.dispose()
    return {"facts": count, "produce_s": produced, "recorded_s": wall, "facts_per_s": count / wall}


async def training(stack: Stack, producer: AIOKafkaProducer, facts: Facts) -> dict:
    args = stack.args
    started = time.perf_counter()
    ends = await asyncio.gather(*(train_model(stack, producer, facts, f"fair-{i}", args.train_iters)
                                  for i in range(args.train_jobs)))
    wall = time.perf_counter() - started
    workers = Counter()
    waits = []
    for end in ends:
        arrived = facts.by_job[end["job_id"]]
        accepted = next(t for t, f in arrived if f["type"] == "JobAccepted")
        start_fact = next((t, f) for t, f in arrived if f["type"] == "TrainStarted")
        workers[start_fact[1]["worker"]] += 1
        waits.append(start_fact[0] - accepted)
    return {"jobs": len(ends), "max_iters": args.train_iters, "wall_s": wall, "jobs_per_min": len(ends) / wall * 60,
            "jobs_per_worker": dict(workers), "accepted_to_started_s": percentiles(waits)}


def memory(stack: Stack) -> dict[str, float]:
    out = {}
    for i, worker in enumerate(stack.workers):
        try:
            out[f"worker-{i}"] = psutil.Process(worker.pid).memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            out[f"worker-{i}"] = float("nan")
    return out


async def run(args: argparse.Namespace) -> dict:
    stack = Stack(args)
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                          "python": platform.python_version()},
                              "broker": "embedded" if stack.broker else stack.settings.kafka_url,
                              "database": stack.settings.resolved_database_url.split("://")[0],
                              "workers": args.workers}
    try:
        await stack.start()
        producer = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap, linger_ms=1)
        await producer.start()
        facts = Facts(stack)
        await facts.start()
        try:
            model = f"bench-{uuid.uuid4().hex[:6]}"
            trained = await train_model(stack, producer, facts, model, args.train_iters)
            report["model"] = {"name": model, "num_parameters": trained["num_parameters"]}
            report["generate"] = await generation(stack, producer, facts, model)
            report["projection"] = await projection(stack, producer, args.facts)
            if args.train_jobs:
                report["training"] = await training(stack, producer, facts)
            report["memory_mb"] = memory(stack)
        finally:
            await facts.stop()
            await producer.stop()
    finally:
        stack.stop()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=30, help="sequential generate requests")
    parser.add_argument("--concurrency", type=int, default=100, help="generate requests sent at once")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per generate request")
    parser.add_argument("--facts", type=int, default=5000, help="synthetic facts for the projection")
    parser.add_argument("--train-jobs", type=int, default=4, help="concurrent training jobs (0 to skip)")
    parser.add_argument("--train-iters", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
