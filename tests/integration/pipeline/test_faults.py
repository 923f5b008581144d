"""Faults: a worker killed mid-job, cancels at every stage, a restarted projector, a projector held up."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from infra.db import create_engine, sessionmaker
from infra.db.tables import JobEventRow
from sqlalchemy import select
from tests.integration.pipeline.conftest import train_request
from tests.integration.stack import Bus, child_processes, start_worker, wait_until

LONG = {"preset": "tiny", "max_iters": 600, "checkpoint_every": 50, "eval_every": 100}


@pytest.fixture
def own_env(pipeline_env: dict[str, str]) -> dict[str, str]:
    """A topic prefix of this test's own, so its workers see only its jobs."""
    return {**pipeline_env, "LFZ_TOPIC_PREFIX": f"lfz.test.f{uuid.uuid4().hex[:10]}."}


@pytest.fixture
def own_bus(own_env: dict[str, str], settings) -> Bus:
    return Bus(settings.kafka_bootstrap, own_env["LFZ_TOPIC_PREFIX"])


def _distinct(events: list[dict]) -> list[dict]:
    seen, out = set(), []
    for event in events:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            out.append(event)
    return out


async def _wait_for(bus: Bus, job_id: str, predicate, timeout: float = 90) -> list[dict]:
    return await bus.read("job.events", predicate, timeout, where=lambda e: e.get("job_id") == job_id)


async def _recorded(settings, job_id: str) -> list[tuple[str, int, str]]:
    engine = create_engine(settings.resolved_database_url)
    try:
        async with sessionmaker(engine)() as session:
            rows = await session.execute(select(JobEventRow.event_id, JobEventRow.seq, JobEventRow.type)
                                         .where(JobEventRow.job_id == job_id).order_by(JobEventRow.seq))
            return [tuple(row) for row in rows.all()]
    finally:
        await engine.dispose()


async def test_kill_9_of_a_training_worker_resumes_on_another_and_completes_once(own_env, own_bus, settings,
                                                                                tmp_path: Path):
    workers = {name: start_worker(name, own_env, tmp_path) for name in ("kill-a", "kill-b")}
    try:
        job_id = f"kill-{uuid.uuid4().hex[:8]}"
        await own_bus.produce("train.requested", {**train_request(job_id, "survivor"), "hyperparameters": LONG},
                              key=job_id)
        seen = await _wait_for(own_bus, job_id, lambda s: any(e["type"] == "CheckpointSaved" for e in s), 120)
        started = next(e for e in seen if e["type"] == "TrainStarted")
        victim = workers[started["worker"]]
        children = child_processes(victim.pid)
        assert children, "training runs in a child process of the worker"
        victim.kill()
        killed_at = time.monotonic()
        # The child notices its parent's death and stops (it must not train on as an orphan).
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 15, "the orphan child to exit")

        await _wait_for(own_bus, job_id, lambda s: any(e["type"] == "TrainStarted" and e["attempt"] > 1 for e in s),
                        120)
        resume_s = time.monotonic() - killed_at
        events = await own_bus.job(job_id, timeout=180)
        resumed = [e for e in events if e["type"] == "TrainStarted" and e["attempt"] > 1]
        survivor = next(name for name in workers if name != started["worker"])
        assert resumed[0]["worker"] == survivor
        assert resumed[0]["resumed_from_step"] >= 50
        print(f"\nkill -9 -> resumed on {survivor} within {resume_s:.1f}s (lease {own_env['LFZ_LEASE_S']}s)")

        distinct = _distinct(events)
        assert [e["type"] for e in distinct].count("TrainCompleted") == 1
        assert distinct[-1]["type"] == "TrainCompleted" and distinct[-1]["final_step"] == 600
        seqs = [e["seq"] for e in distinct]
        trail = [(e["seq"], e["type"], e["producer"]) for e in distinct]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"one job's facts keep their order: {trail}"
        recorded = await asyncio.wait_for(_poll(lambda: _recorded(settings, job_id),
                                                lambda rows: rows and rows[-1][2] == "TrainCompleted"), 30)
        assert [row[2] for row in recorded].count("TrainCompleted") == 1
    finally:
        for process in workers.values():
            process.stop()


async def _poll(fetch, predicate, interval: float = 0.3):
    while True:
        value = await fetch()
        if predicate(value):
            return value
        await asyncio.sleep(interval)


async def test_cancel_before_it_starts_while_queued_and_while_running(own_env, own_bus, tmp_path: Path):
    worker = start_worker("cancel-w", {**own_env, "LFZ_WORKER_MAX_JOBS": "1"}, tmp_path)
    try:
        early, running, queued = (f"c{i}-{uuid.uuid4().hex[:6]}" for i in range(3))
        # A cancel that arrives before its request.
        await own_bus.produce("job.control", {"type": "CancelRequested", "job_id": early}, key=early)
        await asyncio.sleep(1)
        await own_bus.produce("train.requested", train_request(early, "early"), key=early)
        events = await own_bus.job(early, timeout=120)
        assert [e["type"] for e in events] == ["JobAccepted", "JobCancelled"]

        await own_bus.produce("train.requested", {**train_request(running, "running"), "hyperparameters": LONG},
                              key=running)
        await _wait_for(own_bus, running, lambda s: any(e["type"] == "TrainProgress" for e in s), 120)
        await own_bus.produce("train.requested", train_request(queued, "queued"), key=queued)
        await _wait_for(own_bus, queued, lambda s: any(e["type"] == "JobAccepted" for e in s))
        await own_bus.produce("job.control", {"type": "CancelRequested", "job_id": queued}, key=queued)
        queued_events = await own_bus.job(queued)
        assert [e["type"] for e in queued_events] == ["JobAccepted", "JobCancelled"], "it never started"

        children = child_processes(worker.pid)
        asked = time.monotonic()
        await own_bus.produce("job.control", {"type": "CancelRequested", "job_id": running,
                                              "reason": "enough"}, key=running)
        running_events = await own_bus.job(running)
        took = time.monotonic() - asked
        assert running_events[-1]["type"] == "JobCancelled" and running_events[-1]["reason"] == "enough"
        assert took < 10, f"cancel took {took:.1f}s"
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 10, "the child to exit")
        assert worker.alive()
    finally:
        worker.stop()


async def test_restarting_the_worker_loses_and_repeats_nothing(own_env, own_bus, settings, tmp_path: Path):
    first = start_worker("restart-1", own_env, tmp_path)
    job_id = f"restart-{uuid.uuid4().hex[:8]}"
    try:
        await own_bus.produce("train.requested", {**train_request(job_id, "restarted"), "hyperparameters": LONG},
                              key=job_id)
        await _wait_for(own_bus, job_id, lambda s: any(e["type"] == "CheckpointSaved" for e in s), 120)
    finally:
        first.stop()  # SIGTERM: the run checkpoints and goes back to the queue
    second = start_worker("restart-2", own_env, tmp_path)
    try:
        events = await own_bus.job(job_id, timeout=180)
        assert events[-1]["type"] == "TrainCompleted"
        distinct = _distinct(events)
        recorded = await asyncio.wait_for(_poll(lambda: _recorded(settings, job_id),
                                                lambda rows: len(rows) >= len(distinct)), 30)
        assert sorted(row[0] for row in recorded) == sorted(e["event_id"] for e in distinct)
        assert [row[1] for row in recorded] == sorted({e["seq"] for e in distinct})
    finally:
        second.stop()


async def test_training_goes_on_while_the_projector_is_held_up(own_env, own_bus, settings, tmp_path: Path):
    worker = start_worker("held-up", own_env, tmp_path)
    url = settings.resolved_database_url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        job_id = f"held-{uuid.uuid4().hex[:8]}"
        await own_bus.produce("train.requested", {**train_request(job_id, "held"), "hyperparameters": LONG},
                              key=job_id)
        await _wait_for(own_bus, job_id, lambda s: any(e["type"] == "TrainProgress" for e in s), 120)
        connection = await asyncpg.connect(url)
        try:
            transaction = connection.transaction()
            await transaction.start()
            await connection.execute("LOCK TABLE job_events IN ACCESS EXCLUSIVE MODE")
            before = len(await _wait_for(own_bus, job_id, lambda s: True))
            await asyncio.sleep(6)
            during = await _wait_for(own_bus, job_id, lambda s: True)
            assert len(during) > before + 3, "facts kept flowing while the database was blocked"
            await transaction.rollback()
        finally:
            await connection.close()
        events = await own_bus.job(job_id, timeout=180)
        assert events[-1]["type"] == "TrainCompleted"
        recorded = await asyncio.wait_for(_poll(lambda: _recorded(settings, job_id),
                                                lambda rows: rows and rows[-1][2] == "TrainCompleted"), 60)
        assert len(recorded) == len(_distinct(events))
    finally:
        worker.stop()
