"""A gateway process restarted while several clients follow a job's event stream through it.

Each client (`Client.follow_job`) loses its connection when the process goes, reconnects to the restarted process
on the same address with Last-Event-ID, and must end up with every event of the job once, in order. The job runs
until the test cancels it, after every client has streamed from the new process, so the test does not depend on how
fast the machine trains.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cli.client import Client
from infra.settings import Settings
from tests.integration.stack import (Bus, Follower, distinct, start_gateway, start_worker, wait_for_job,
                                     wait_until)

CLIENTS = 4
ENDLESS = {"preset": "tiny", "max_iters": 200_000, "checkpoint_every": 1000, "eval_every": 1000}
CORPUS = "the quick brown fox jumps over the lazy dog.\n" * 80


def _streamed_since(follower: Follower, since: float) -> bool:
    return any(at > since and event["type"] == "TrainProgress" for at, event in list(follower.arrivals))


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_clients_following_a_job_resume_on_the_restarted_gateway_and_miss_nothing(
        signal_name: str, stack_env: dict[str, str], settings: Settings, tmp_path: Path):
    prefix = f"lfz.test.r{uuid.uuid4().hex[:10]}."
    env = {**stack_env, "LFZ_TOPIC_PREFIX": prefix}
    worker = start_worker("restart-worker", env, tmp_path)
    gateway, url = start_gateway("gateway-1", env, tmp_path)
    try:
        with Client(url) as client:
            job_id = client.create_model(f"restart-{uuid.uuid4().hex[:6]}", text=CORPUS,
                                         hyperparameters=ENDLESS)["job_id"]
        wait_for_job(url, job_id)
        followers = [Follower(url, job_id, patience_s=60, retry_delay_s=0.1) for _ in range(CLIENTS)]
        for follower in followers:
            follower.start()
        wait_until(lambda: all(f.saw("TrainProgress") for f in followers), 120, "every client to stream progress")

        before = [len(f.arrivals) for f in followers]
        going = time.monotonic()
        if signal_name == "SIGKILL":
            gateway.kill()
        gateway.stop()  # SIGTERM: uvicorn's graceful shutdown ends the open streams
        gone = time.monotonic()
        gateway, _ = start_gateway("gateway-2", env, tmp_path, port=urlparse(url).port)
        restarted = time.monotonic()
        wait_until(lambda: all(_streamed_since(f, restarted) for f in followers), 120,
                   "every client to stream from the restarted gateway")
        # Whatever arrived after the old process was gone came through the new one.
        resumed = max(min(at for at, _ in f.arrivals if at > gone) - gone for f in followers)
        with Client(url) as client:
            client.cancel_job(job_id)
        streams = [follower.events(120) for follower in followers]
        facts = distinct(asyncio.run(Bus(settings.kafka_bootstrap, prefix).job(job_id, timeout=60)))
    finally:
        gateway.stop()
        worker.stop()

    assert facts[-1]["type"] == "JobCancelled"
    for events, count in zip(streams, before):
        assert 0 < count < len(events), "the client streamed before the restart and after it"
        assert [e["seq"] for e in events] == list(range(1, len(facts) + 1)), "every event once, in order"
        assert [e["event_id"] for e in events] == [e["event_id"] for e in sorted(facts, key=lambda e: e["seq"])]
    print(f"\ngateway {signal_name}: the old process took {gone - going:.1f}s to go, the new one answered "
          f"{restarted - gone:.1f}s later; all {CLIENTS} clients had events from it within {resumed:.1f}s of the "
          f"old one's exit")
