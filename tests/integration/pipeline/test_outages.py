"""Outages of the servers themselves: the broker, then the database, stops for 30 s in the middle of a training run
and comes back. Each test runs on a server of its own (tests/integration/servers.py), since the shared ones must
never stop, and takes minutes: they are marked `soak` and run by `make soak`, not `make test`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from cli.client import Client
from infra.db import migrate
from tests.integration.pipeline.conftest import corpus
from tests.integration.servers import PrivateServers
from tests.integration.stack import (Bus, Follower, job_processes, distinct, poll, recorded, start_gateway,
                                     start_worker, wait_for_job, wait_until)

pytestmark = [pytest.mark.soak, pytest.mark.timeout(900)]

OUTAGE_S = 30
# Runs through the outage on a busy machine and may end inside it on a quiet one (24 s to 2 min here): either way
# it makes facts while the server is away. Checkpoints and validations now and then.
LONG = {"preset": "tiny", "max_iters": 3000, "checkpoint_every": 250, "eval_every": 250}
SHORT = {"preset": "tiny", "max_iters": 100}
ENDLESS = {**LONG, "max_iters": 200_000}  # until the test cancels it


@pytest.fixture
def private(tmp_path: Path) -> Iterator[PrivateServers]:
    servers = PrivateServers(tmp_path / "services")
    yield servers
    servers.purge()


def _made(event: dict) -> float:
    """When a fact was made, as time.time() would have said."""
    return datetime.fromisoformat(event["time"]).timestamp()


def _produced_between(events: list[dict], start: float, end: float) -> list[dict]:
    """Facts made while a server was away; `start` and `end` are time.time() values."""
    return [e for e in events if start <= _made(e) <= end]


def _numbered_once(events: list[dict]) -> list[int]:
    return sorted(e["seq"] for e in distinct(events))


async def test_the_broker_stopped_for_30s_mid_training_loses_no_job_and_no_event(pipeline_env, settings, private,
                                                                                tmp_path: Path):
    await asyncio.to_thread(private.up, "kafka")
    prefix = f"lfz.test.k{uuid.uuid4().hex[:10]}."
    env = {**pipeline_env, **private.settings(), "LFZ_TOPIC_PREFIX": prefix, "LFZ_WORKER_MAX_JOBS": "1"}
    bus = Bus(env["LFZ_KAFKA_URL"].removeprefix("kafka://"), prefix)
    worker = start_worker("kafka-outage", env, tmp_path)
    gateway, url = start_gateway("kafka-outage-gw", env, tmp_path)
    try:
        with Client(url) as client:
            running = client.create_model(f"through-{uuid.uuid4().hex[:6]}", text=corpus(), hyperparameters=LONG)
            queued = client.create_model(f"after-{uuid.uuid4().hex[:6]}", text=corpus(), hyperparameters=SHORT)
        await asyncio.to_thread(wait_for_job, url, running["job_id"])
        follower = Follower(url, running["job_id"])
        follower.start()
        await asyncio.to_thread(wait_until, lambda: follower.saw("TrainProgress"), 180, "training to start")

        await asyncio.to_thread(private.down, "kafka")
        stopped, stopped_wall = time.monotonic(), time.time()
        await asyncio.sleep(OUTAGE_S)  # the outage itself: the job trains on, its facts wait in the outbox
        assert worker.alive() and gateway.alive(), "the worker and the gateway ride the outage out"
        back, back_wall = time.monotonic(), time.time()
        start_s = await asyncio.to_thread(private.up, "kafka")

        events = await asyncio.to_thread(follower.events, 600)
        facts = distinct(await bus.job(running["job_id"], timeout=300))
        second = distinct(await bus.job(queued["job_id"], timeout=300))
        rows = await asyncio.wait_for(poll(lambda: recorded(settings.resolved_database_url, running["job_id"]),
                                           lambda rows: len(rows) >= len(facts)), 120)
    finally:
        gateway.stop()
        worker.stop()

    assert [e["type"] for e in facts].count("TrainCompleted") == 1 and facts[-1]["type"] == "TrainCompleted"
    assert _numbered_once(facts) == list(range(1, len(facts) + 1)), "numbered 1..N, no gap, no repeat"
    assert second[-1]["type"] == "TrainCompleted", "the job queued behind it ran too"
    during = _produced_between(facts, stopped_wall, back_wall)
    assert during, "the job went on producing facts while the broker was away"
    # The SSE client saw every fact once, in order, those of the outage included.
    assert [e["seq"] for e in events] == list(range(1, len(facts) + 1))
    assert {e["event_id"] for e in events} == {e["event_id"] for e in facts}
    arrived = {event["event_id"]: at for at, event in follower.arrivals}
    first_new = min(arrived[e["event_id"]] for e in during) - back
    all_new = max(arrived[e["event_id"]] for e in during) - back
    assert sorted(row[0] for row in rows) == sorted(e["event_id"] for e in facts), "the projection has every fact"
    print(f"\nbroker outage: down {OUTAGE_S}s after {stopped - follower.arrivals[0][0]:.1f}s of streaming, "
          f"{len(during)} facts made meanwhile; after the broker's restart it served clients in {start_s:.1f}s, "
          f"the SSE client had the first of those facts in {first_new:.1f}s and all of them in {all_new:.1f}s")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


async def test_the_database_stopped_for_30s_pauses_the_jobs_loses_no_fact_and_the_gateway_says_so(
        pipeline_env, settings, private, tmp_path: Path):
    """A worker cannot tell a database that is down for everyone from one that only it has lost, and in the second
    case another worker takes its job over after `lease_s`: so a run whose lease goes unrenewed for half of that
    pauses its process and holds its facts. Here the database is down for everyone: every job pauses, nobody takes
    anything over, and when the database is back each job goes on where it was, in its own run."""
    await asyncio.to_thread(private.up, "postgres")
    database_url = private.settings()["LFZ_DATABASE_URL"]
    await asyncio.to_thread(migrate, database_url, quiet=True)
    prefix = f"lfz.test.d{uuid.uuid4().hex[:10]}."
    env = {**pipeline_env, "LFZ_DATABASE_URL": database_url, "LFZ_TOPIC_PREFIX": prefix, "LFZ_WORKER_MAX_JOBS": "2"}
    lease_s = float(env["LFZ_LEASE_S"])
    bus = Bus(settings.kafka_bootstrap, prefix)
    worker = start_worker("db-outage", env, tmp_path)
    gateway, url = start_gateway("db-outage-gw", env, tmp_path)
    try:
        # Two jobs side by side: one trains until the test cancels it, one ends after the outage.
        with Client(url) as client:
            through = client.create_model(f"through-{uuid.uuid4().hex[:6]}", text=corpus(),
                                          hyperparameters=ENDLESS)["job_id"]
            ending = client.create_model(f"ending-{uuid.uuid4().hex[:6]}", text=corpus(),
                                         hyperparameters=LONG)["job_id"]
        for job_id in (through, ending):
            await bus.job_until(job_id, lambda seen: any(e["type"] == "TrainProgress" for e in seen), 180)
        children = job_processes(worker.pid)
        assert len(children) == 2

        await asyncio.to_thread(private.down, "postgres")
        down_since, stopped_wall = time.monotonic(), time.time()
        refusals = {path: await asyncio.to_thread(_refused_naming_the_database, url, path)
                    for path in ("/api/v1/models", "/health")}
        await asyncio.to_thread(wait_until, lambda: all(_state(pid) == "T" for pid in children), lease_s + 10,
                                "both jobs' processes to pause")
        paused_s, paused_wall = time.monotonic() - down_since, time.time()
        while time.monotonic() - down_since < OUTAGE_S:  # the outage itself; the gateway keeps answering 503
            await asyncio.sleep(1)
            assert (await asyncio.to_thread(httpx.get, f"{url}/api/v1/models", timeout=10)).status_code == 503
            assert all(_state(pid) == "T" for pid in children), "paused for as long as the database is away"
        assert worker.alive() and gateway.alive(), "the worker and the gateway ride the outage out"
        back, back_wall = time.monotonic(), time.time()
        start_s = await asyncio.to_thread(private.up, "postgres")

        await asyncio.to_thread(wait_until, lambda: httpx.get(f"{url}/api/v1/models", timeout=10).status_code == 200,
                                60, "the gateway to answer again")
        answered_s = time.monotonic() - back
        await asyncio.to_thread(wait_until, lambda: all(_state(pid) in "RS" for pid in children), 30,
                                "both jobs' processes to go on")
        resumed_s = time.monotonic() - back
        log = await bus.job_until(through, lambda seen: any(_made(e) > back_wall for e in seen), 120)
        held = _produced_between(log, stopped_wall, back_wall)
        await asyncio.wait_for(poll(lambda: recorded(database_url, through),
                                    lambda rows: {e["event_id"] for e in held} <= {r[0] for r in rows}), 120)
        caught_up_s = time.monotonic() - back
        ended = distinct(await bus.job(ending, timeout=600))
        with Client(url) as client:
            client.cancel_job(through)
        jobs = {job_id: distinct(await bus.job(job_id, timeout=120)) for job_id in (through, ending)}
        rows = {job_id: await asyncio.wait_for(poll(lambda: recorded(database_url, job_id),
                                                    lambda rows: len(rows) >= len(facts)), 120)
                for job_id, facts in jobs.items()}
        health = httpx.get(f"{url}/health", timeout=10)
    finally:
        gateway.stop()
        worker.stop()

    for job_id, facts in jobs.items():
        assert [e["type"] for e in facts].count("TrainStarted") == 1, "each job went on in its own run: no takeover"
        assert not [e for e in facts if paused_wall + 1 < _made(e) < back_wall], "nothing made while paused"
        assert sorted(row[0] for row in rows[job_id]) == sorted(e["event_id"] for e in facts), "all in job_events"
        assert [row[1] for row in rows[job_id]] == list(range(1, len(facts) + 1))
    assert ended[-1]["type"] == "TrainCompleted" and _made(ended[-1]) > back_wall
    assert jobs[through][-1]["type"] == "JobCancelled"
    assert health.status_code == 200, health.text
    print(f"\ndatabase outage: {back - down_since:.0f}s; answers while "
          "down: " + "; ".join(f"{path} {status} {message!r}" for path, (status, message) in refusals.items())
          + f"; both jobs paused {paused_s:.1f}s into it ({len(held)} facts made before that, held back); after "
          f"its restart PostgreSQL served in {start_s:.1f}s, the gateway answered 200 in {answered_s:.1f}s, the jobs "
          f"went on in {resumed_s:.1f}s and job_events held every fact of the outage in {caught_up_s:.1f}s")


def _refused_naming_the_database(url: str, path: str) -> tuple[int, str]:
    response = httpx.get(f"{url}{path}", timeout=10)
    assert response.status_code == 503, f"{path}: {response.status_code} {response.text}"
    message = response.json()["error"]["message"]
    assert "database" in message, f"{path} names what is down: {message}"
    return response.status_code, message


async def test_the_object_store_stopped_for_30s_mid_training_hands_the_job_back_and_it_completes(
        pipeline_env, settings, private, tmp_path: Path):
    """The S3 server itself stops for 30 s while a job trains and writes checkpoints. With a patience of 10 s the
    job waits, then goes back to the queue (not failed), and resumes from its newest valid checkpoint once the store
    is back; its facts stay 1..N and the projection has them all."""
    await asyncio.to_thread(private.up, "s3")
    store = private.settings()
    prefix = f"lfz.test.s{uuid.uuid4().hex[:10]}."
    env = {**pipeline_env, "LFZ_OBJECT_STORE_URL": store["LFZ_OBJECT_STORE_URL"],
           "LFZ_S3_ACCESS_KEY": store["LFZ_S3_ACCESS_KEY"], "LFZ_S3_SECRET_KEY": store["LFZ_S3_SECRET_KEY"],
           "LFZ_TOPIC_PREFIX": prefix, "LFZ_OBJECT_STORE_PATIENCE_S": "10"}
    bus = Bus(settings.kafka_bootstrap, prefix)
    worker = start_worker("s3-outage", env, tmp_path)
    gateway, url = start_gateway("s3-outage-gw", env, tmp_path)
    try:
        with Client(url) as client:
            job_id = client.create_model(f"through-{uuid.uuid4().hex[:6]}", text=corpus(),
                                         hyperparameters=LONG)["job_id"]
        await bus.job_until(job_id, lambda seen: any(e["type"] == "CheckpointSaved" for e in seen), 180)
        await asyncio.to_thread(private.down, "s3")
        down_since, stopped_wall = time.monotonic(), time.time()
        await asyncio.sleep(OUTAGE_S)
        assert worker.alive() and gateway.alive()
        start_s = await asyncio.to_thread(private.up, "s3")
        back = time.monotonic()
        facts = distinct(await bus.job(job_id, timeout=600))
        done_s = time.monotonic() - back
        rows = await asyncio.wait_for(poll(lambda: recorded(settings.resolved_database_url, job_id),
                                           lambda rows: len(rows) >= len(facts)), 120)
    finally:
        gateway.stop()
        worker.stop()

    types = [e["type"] for e in facts]
    assert types[-1] == "TrainCompleted" and "TrainFailed" not in types, types
    started = [e for e in facts if e["type"] == "TrainStarted"]
    assert len(started) >= 2 and started[-1]["resumed_from_step"] > 0, "handed back, then resumed"
    waited = [e for e in facts if e["type"] == "TrainProgress" and (e.get("warning") or "").startswith(
        "the object store is unavailable") and _made(e) >= stopped_wall]
    assert waited, "the progress said the job waits for the object store"
    assert _numbered_once(facts) == list(range(1, len(facts) + 1))
    assert sorted(row[0] for row in rows) == sorted(e["event_id"] for e in facts)
    print(f"\nobject store outage: {back - down_since:.0f}s; the job waited, went back to the queue, and resumed "
          f"from step {started[-1]['resumed_from_step']}; after its restart the S3 server served in {start_s:.1f}s "
          f"and the job completed {done_s:.1f}s later")
