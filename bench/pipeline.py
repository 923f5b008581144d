"""`python -m bench pipeline`: the pipeline's speed, measured through Kafka with real agents workers.

It starts what it measures (bench.stack): the Kafka of LFZ_KAFKA_URL or the embedded broker, the database of
LFZ_DATABASE_URL or SQLite in a temporary folder, the object store of LFZ_OBJECT_STORE_URL or a temporary folder,
and `--workers` agents workers, all on a topic prefix of its own. Then:

* generate: end-to-end latency from producing a GenerateRequested to the first TokensGenerated and to the
  GenerationCompleted, one request at a time (p50/p95) and `--concurrency` at once (p50/p95/p99);
* projection: facts per second that the record agent writes to the database (synthetic TrainProgress facts);
* training: `--train-jobs` concurrent training jobs across the workers: throughput, and how evenly the workers
  shared them (jobs per worker, Jain's index: 1.0 is an even split);
* processes: peak and last resident memory and CPU seconds of each worker (and its training children) and of the
  broker when it runs on this machine, over the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import func, select

from events import TERMINAL_TYPES, JobCancelled, Topics, TrainProgress
from bench.measure import ProcessMonitor, jain_index, percentiles
from bench.stack import BenchStack, describe_servers
from infra.db import create_engine, sessionmaker
from infra.db.tables import JobEventRow, Model
from infra.kafka import client_options, ensure_topics, stop_consumer
from infra.settings import load_settings

CORPUS = "\n".join(f"Line {i}: the pipeline carries requests to the agents and facts back to the clients."
                   for i in range(400))


@dataclass
class Run:
    """One benchmark run: its arguments, the stack it measures and that stack's topics."""

    args: argparse.Namespace
    stack: BenchStack
    topics: Topics = field(init=False)

    def __post_init__(self) -> None:
        self.topics = Topics(self.stack.settings.topic_prefix)


class Facts:
    """One consumer of the job-events topic from the start, recording when each fact of each job arrived."""

    def __init__(self, run: Run):
        self.run = run
        self.by_job: dict[str, list[tuple[float, dict]]] = {}
        self.changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(self.run.topics.job_events,
                                         **client_options(self.run.stack.settings),
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


async def train_model(run: Run, producer: AIOKafkaProducer, facts: Facts, name: str, iters: int) -> dict:
    job_id = f"train-{uuid.uuid4().hex[:8]}"
    await _send(producer, run.topics.train_requested,
                {"type": "TrainRequested", "job_id": job_id, "model_name": name, "dataset": {"text": CORPUS},
                 "hyperparameters": {"preset": run.args.preset, "max_iters": iters}}, job_id)
    end = (await facts.until(job_id))[-1][1]
    if end["type"] != "TrainCompleted":
        raise RuntimeError(f"training failed: {end}")
    return end


async def one_generation(run: Run, producer: AIOKafkaProducer, facts: Facts, model: str, tokens: int) -> dict:
    request_id = f"gen-{uuid.uuid4().hex[:10]}"
    started = await _send(producer, run.topics.generate_requested,
                          {"type": "GenerateRequested", "request_id": request_id, "model_name": model,
                           "prompt": "Line 7: the", "max_tokens": tokens, "seed": 1}, request_id)
    arrived = await facts.until(request_id)
    if arrived[-1][1]["type"] != "GenerationCompleted":
        raise RuntimeError(f"generation failed: {arrived[-1][1]}")
    first = next(t for t, f in arrived if f["type"] == "TokensGenerated")
    done = arrived[-1]
    return {"first_ms": (first - started) * 1000, "done_ms": (done[0] - started) * 1000,
            "tokens": done[1].get("completion_tokens", 0)}


async def until_recorded(run: Run, model: str, timeout_s: float = 120) -> float:
    """Seconds until the projection has the trained model. Generation is measured from there: a request sent
    earlier would measure the projector's lag instead (the generate agent waits only a few seconds for it)."""
    engine = create_engine(run.stack.settings.resolved_database_url)
    started = time.monotonic()
    try:
        async with sessionmaker(engine)() as session:
            while time.monotonic() - started < timeout_s:
                trained = await session.scalar(select(Model.trained_at).where(Model.name == model).limit(1))
                if trained is not None:
                    return time.monotonic() - started
                await session.rollback()  # a fresh snapshot for the next look
                await asyncio.sleep(0.05)
    finally:
        await engine.dispose()
    raise TimeoutError(f"the projection did not record model {model} as trained within {timeout_s:.0f}s")


async def generation(run: Run, producer: AIOKafkaProducer, facts: Facts, model: str) -> dict:
    args = run.args
    await one_generation(run, producer, facts, model, args.tokens)  # loads the model into the cache
    sequential = [await one_generation(run, producer, facts, model, args.tokens) for _ in range(args.requests)]
    started = time.perf_counter()
    concurrent = await asyncio.gather(*(one_generation(run, producer, facts, model, args.tokens)
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


async def projection(run: Run, producer: AIOKafkaProducer, count: int, timeout_s: float = 600) -> dict:
    job_id = f"proj-{uuid.uuid4().hex[:8]}"
    engine = create_engine(run.stack.settings.resolved_database_url)
    started = time.perf_counter()
    for seq in range(1, count + 1):
        fact = TrainProgress(job_id=job_id, seq=seq, producer="bench", kind="train", step=seq, max_iters=count,
                             loss=1.0, learning_rate=1e-3, tokens_per_s=1.0, elapsed_s=1.0, progress=seq / count)
        await producer.send(run.topics.job_events, fact.to_json(), key=job_id.encode())
    await producer.flush()
    produced = time.perf_counter() - started
    deadline = time.monotonic() + timeout_s

    sessions = sessionmaker(engine)

    async def recorded(n: int) -> None:
        async with sessions() as session:
            while True:
                rows = await session.scalar(select(func.count()).select_from(JobEventRow)
                                            .where(JobEventRow.job_id == job_id))
                if rows >= n:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the projection recorded {rows} of {n} facts in {timeout_s:.0f}s")
                await asyncio.sleep(0.05)  # polling the table: the record agent says nothing when it has written

    await recorded(count)
    wall = time.perf_counter() - started
    # The synthetic job ends, or the shared database would count it as running against the no-key quota for good.
    end = JobCancelled(job_id=job_id, seq=count + 1, producer="bench", kind="train", reason="a benchmark's facts")
    await producer.send_and_wait(run.topics.job_events, end.to_json(), key=job_id.encode())
    await recorded(count + 1)
    await engine.dispose()
    return {"facts": count, "produce_s": produced, "recorded_s": wall, "facts_per_s": count / wall}


async def training(run: Run, producer: AIOKafkaProducer, facts: Facts) -> dict:
    args = run.args
    started = time.perf_counter()
    ends = await asyncio.gather(*(train_model(run, producer, facts, f"fair-{i}", args.train_iters)
                                  for i in range(args.train_jobs)))
    wall = time.perf_counter() - started
    # A worker's id is host-pid (agents.runtime): name it as the stack does, and count the workers that got nothing.
    names = {f"{socket.gethostname()}-{child.pid}": child.name for child in run.stack.children}
    jobs = Counter({name: 0 for name in names.values()})
    waits, durations, tokens = [], [], 0.0
    for end in ends:
        arrived = facts.by_job[end["job_id"]]
        accepted = next(t for t, f in arrived if f["type"] == "JobAccepted")
        started_at, start_fact = next((t, f) for t, f in arrived if f["type"] == "TrainStarted")
        jobs[names.get(start_fact["worker"], start_fact["worker"])] += 1
        waits.append(started_at - accepted)
        durations.append(arrived[-1][0] - accepted)
        tokens += (end.get("tokens_per_s") or 0.0) * end["wall_s"]
    return {"jobs": len(ends), "workers": len(names), "max_iters": args.train_iters, "wall_s": wall,
            "jobs_per_min": len(ends) / wall * 60, "tokens_per_s": tokens / wall, "jobs_per_worker": dict(jobs),
            "jain_index": jain_index(jobs.values()), "accepted_to_started_s": percentiles(waits),
            "accepted_to_completed_s": percentiles(durations)}


async def measure(run: Run) -> dict:
    args, stack = run.args, run.stack
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                          "python": platform.python_version()},
                              "servers": describe_servers(stack.settings), "workers": args.workers}
    await ensure_topics(stack.settings)  # before the first consumer: it would not see a topic created later
    with ProcessMonitor(stack.processes()) as monitor:
        producer = AIOKafkaProducer(**client_options(stack.settings), linger_ms=1)
        await producer.start()
        facts = Facts(run)
        await facts.start()
        try:
            model = f"bench-{uuid.uuid4().hex[:6]}"
            trained = await train_model(run, producer, facts, model, args.train_iters)
            report["model"] = {"name": model, "num_parameters": trained["num_parameters"],
                               "recorded_after_s": await until_recorded(run, model)}
            report["generate"] = await generation(run, producer, facts, model)
            report["projection"] = await projection(run, producer, args.facts)
            if args.train_jobs:
                report["training"] = await training(run, producer, facts)
        finally:
            await facts.stop()
            await producer.stop()
    # Over the whole run; a worker's figures include its training children (children_*).
    report["processes"] = monitor.report()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preset", default="tiny", help="the preset of the model trained and served")
    parser.add_argument("--requests", type=int, default=30, help="sequential generate requests")
    parser.add_argument("--concurrency", type=int, default=100, help="generate requests sent at once")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per generate request")
    parser.add_argument("--facts", type=int, default=5000, help="synthetic facts for the projection")
    parser.add_argument("--train-jobs", type=int, default=4, help="concurrent training jobs (0 to skip)")
    parser.add_argument("--train-iters", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for name in ("workers", "requests", "concurrency", "tokens", "facts", "train_iters"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.train_jobs < 0:
        parser.error(f"--train-jobs must not be negative, got {args.train_jobs}")
    # Started outside the event loop: the supervisor waits synchronously, and Linux's parent-death signal of the
    # children belongs to the thread that started them, which must live as long as they do.
    with BenchStack(load_settings(), workers=args.workers, name="bench-agents") as stack:
        report = asyncio.run(measure(Run(args, stack)))
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
