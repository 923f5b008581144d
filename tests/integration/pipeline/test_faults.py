"""Faults: a worker killed mid-job, cancels at every stage, a restarted projector, a projector held up."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import asyncpg

from tests.integration.pipeline.conftest import train_request
from tests.integration.proxy import CuttableProxy
from tests.integration.servers import asyncpg_url
from tests.integration.stack import job_processes, distinct, poll, recorded, start_worker, wait_until

LONG = {"preset": "tiny", "max_iters": 600, "checkpoint_every": 50, "eval_every": 100}


async def test_kill_9_of_a_training_worker_resumes_on_another_and_completes_once(own_env, own_bus, settings,
                                                                                tmp_path: Path):
    workers = {name: start_worker(name, own_env, tmp_path) for name in ("kill-a", "kill-b")}
    try:
        job_id = f"kill-{uuid.uuid4().hex[:8]}"
        await own_bus.produce("train.requested", {**train_request(job_id, "survivor"), "hyperparameters": LONG},
                              key=job_id)
        seen = await own_bus.job_until(job_id, lambda s: any(e["type"] == "CheckpointSaved" for e in s), 120)
        started = next(e for e in seen if e["type"] == "TrainStarted")
        victim = workers[started["worker"]]
        children = job_processes(victim.pid)
        assert children, "training runs in a child process of the worker"
        victim.kill()
        killed_at = time.monotonic()
        # The child notices its parent's death and stops (it must not train on as an orphan).
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 15, "the orphan child to exit")

        await own_bus.job_until(job_id, lambda s: any(e["type"] == "TrainStarted" and e["attempt"] > 1 for e in s),
                                120)
        resume_s = time.monotonic() - killed_at
        events = await own_bus.job(job_id, timeout=180)
        resumed = [e for e in events if e["type"] == "TrainStarted" and e["attempt"] > 1]
        survivor = next(name for name in workers if name != started["worker"])
        assert resumed[0]["worker"] == survivor
        assert resumed[0]["resumed_from_step"] >= 50
        print(f"\nkill -9 -> resumed on {survivor} within {resume_s:.1f}s (lease {own_env['LFZ_LEASE_S']}s)")

        facts = distinct(events)
        assert [e["type"] for e in facts].count("TrainCompleted") == 1
        assert facts[-1]["type"] == "TrainCompleted" and facts[-1]["final_step"] == 600
        seqs = [e["seq"] for e in facts]
        trail = [(e["seq"], e["type"], e["producer"]) for e in facts]
        assert seqs == list(range(1, len(facts) + 1)), f"one job's facts are 1..N, no gap, no repeat: {trail}"
        in_db = await asyncio.wait_for(poll(lambda: recorded(settings.resolved_database_url, job_id),
                                            lambda rows: rows and rows[-1][2] == "TrainCompleted"), 30)
        assert [row[2] for row in in_db].count("TrainCompleted") == 1
        assert [row[1] for row in in_db] == seqs and [row[0] for row in in_db] == [e["event_id"] for e in facts]
    finally:
        for process in workers.values():
            process.stop()


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
        await own_bus.job_until(running, lambda s: any(e["type"] == "TrainProgress" for e in s), 120)
        await own_bus.produce("train.requested", train_request(queued, "queued"), key=queued)
        await own_bus.job_until(queued, lambda s: any(e["type"] == "JobAccepted" for e in s))
        await own_bus.produce("job.control", {"type": "CancelRequested", "job_id": queued}, key=queued)
        queued_events = await own_bus.job(queued)
        assert [e["type"] for e in queued_events] == ["JobAccepted", "JobCancelled"], "it never started"

        children = job_processes(worker.pid)
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
        await own_bus.job_until(job_id, lambda s: any(e["type"] == "CheckpointSaved" for e in s), 120)
    finally:
        first.stop()  # SIGTERM: the run checkpoints and goes back to the queue
    second = start_worker("restart-2", own_env, tmp_path)
    try:
        events = await own_bus.job(job_id, timeout=180)
        assert events[-1]["type"] == "TrainCompleted"
        facts = distinct(events)
        in_db = await asyncio.wait_for(poll(lambda: recorded(settings.resolved_database_url, job_id),
                                            lambda rows: len(rows) >= len(facts)), 30)
        assert sorted(row[0] for row in in_db) == sorted(e["event_id"] for e in facts)
        assert [row[1] for row in in_db] == sorted({e["seq"] for e in facts})
    finally:
        second.stop()


async def test_training_goes_on_while_the_projector_is_held_up(own_env, own_bus, settings, tmp_path: Path):
    worker = start_worker("held-up", own_env, tmp_path)
    url = asyncpg_url(settings.resolved_database_url)
    try:
        job_id = f"held-{uuid.uuid4().hex[:8]}"
        await own_bus.produce("train.requested", {**train_request(job_id, "held"), "hyperparameters": LONG},
                              key=job_id)
        await own_bus.job_until(job_id, lambda s: any(e["type"] == "TrainProgress" for e in s), 120)
        connection = await asyncpg.connect(url)
        try:
            transaction = connection.transaction()
            await transaction.start()
            await connection.execute("LOCK TABLE job_events IN ACCESS EXCLUSIVE MODE")
            before = len(await own_bus.job_until(job_id, lambda s: True))
            await asyncio.sleep(6)
            during = await own_bus.job_until(job_id, lambda s: True)
            assert len(during) > before + 3, "facts kept flowing while the database was blocked"
            await transaction.rollback()
        finally:
            await connection.close()
        events = await own_bus.job(job_id, timeout=180)
        assert events[-1]["type"] == "TrainCompleted"
        in_db = await asyncio.wait_for(poll(lambda: recorded(settings.resolved_database_url, job_id),
                                            lambda rows: rows and rows[-1][2] == "TrainCompleted"), 60)
        assert len(in_db) == len(distinct(events))
    finally:
        worker.stop()


async def test_a_stop_signal_that_reaches_the_training_process_itself_does_not_fail_the_job(own_env, own_bus,
                                                                                           tmp_path: Path):
    """Regression: a SIGTERM to the worker's process group also reached its training child, which died of it before
    the worker could suspend the run, and the job failed ("the train process stopped unexpectedly")."""
    worker = start_worker("signalled", own_env, tmp_path)
    try:
        job_id = f"signalled-{uuid.uuid4().hex[:8]}"
        await own_bus.produce("train.requested", {**train_request(job_id, "signalled"), "hyperparameters": LONG},
                              key=job_id)
        await own_bus.job_until(job_id, lambda s: any(e["type"] == "CheckpointSaved" for e in s), 120)
        children = job_processes(worker.pid)
        assert children, "training runs in a child process of the worker"
        for pid in children:
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGINT)
        events = distinct(await own_bus.job(job_id, timeout=180))
        assert events[-1]["type"] == "TrainCompleted", events[-1]
        assert [e["type"] for e in events].count("TrainStarted") == 1  # the same run went on
    finally:
        worker.stop()


def _state(pid: int) -> str:
    """The process's state letter from /proc (`T`: stopped), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


async def test_a_worker_cut_off_from_the_database_stops_its_job_and_publishes_nothing_once_taken_over(
        own_env, own_bus, settings, tmp_path: Path):
    """A worker that reaches Kafka but not the database kept training and publishing after another worker had taken
    its job over: two runs wrote the same checkpoint keys and clashing sequence numbers. Now the cut-off run pauses
    its process and holds its facts once its lease may be stale, and kills the process when it learns it lost."""
    database = urlparse(settings.resolved_database_url)
    proxy = CuttableProxy((database.hostname or "127.0.0.1", database.port or 5432))
    cut_url = settings.resolved_database_url.replace(f"{database.hostname}:{database.port}",
                                                     f"127.0.0.1:{proxy.port}")
    cut_off = start_worker("fence-a", {**own_env, "LFZ_DATABASE_URL": cut_url}, tmp_path)
    other = None
    try:
        job_id = f"fence-{uuid.uuid4().hex[:8]}"
        await own_bus.produce("train.requested", {**train_request(job_id, "fenced"), "hyperparameters": LONG},
                              key=job_id)
        await own_bus.job_until(job_id, lambda s: any(e["type"] == "CheckpointSaved" for e in s), 120)
        other = start_worker("fence-b", own_env, tmp_path)
        child, = job_processes(cut_off.pid)
        proxy.cut()
        cut_at = time.time()
        lease_s = float(own_env["LFZ_LEASE_S"])
        wait_until(lambda: _state(child) == "T", lease_s + 5, "the cut-off run to pause its process")
        paused_at = time.time()
        seen = await own_bus.job_until(job_id, lambda s: any(e["type"] == "TrainStarted" and e["attempt"] > 1
                                                             for e in s), 120)
        taken_over = next(e for e in seen if e["type"] == "TrainStarted" and e["attempt"] > 1)
        assert taken_over["worker"] == "fence-b"
        assert _state(child) == "T", "paused until it hears whose the job is"
        proxy.mend()
        wait_until(lambda: _state(child) == "gone", 30, "the run that lost its job to kill its process")

        facts = distinct(await own_bus.job(job_id, timeout=240))
        from_cut_off = [e for e in facts if e["producer"] == "agents/fence-a"]
        assert all(time_of(e) <= paused_at for e in from_cut_off), "nothing from the cut-off run once paused"
        assert all(time_of(e) < time_of(taken_over) for e in from_cut_off)
        seqs = [e["seq"] for e in facts]
        trail = [(e["seq"], e["type"], e["producer"]) for e in facts]
        assert seqs == list(range(1, len(facts) + 1)), f"1..N, no clash between the two runs: {trail}"
        assert facts[-1]["type"] == "TrainCompleted" and facts[-1]["final_step"] == LONG["max_iters"]
        assert cut_off.alive(), "the cut-off worker itself lives on"
        print(f"\ncut off at {cut_at:.1f}: paused {paused_at - cut_at:.1f}s later; taken over "
              f"{time_of(taken_over) - cut_at:.1f}s after the cut (lease {lease_s:g}s)")
    finally:
        proxy.close()
        for process in (cut_off, other):
            if process is not None:
                process.stop()


def time_of(event: dict) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


async def test_a_run_past_the_wall_clock_limit_is_cancelled_keeping_its_checkpoint(own_env, own_bus, tmp_path: Path):
    worker = start_worker("wall-w", {**own_env, "LFZ_JOB_MAX_WALL_S": "4"}, tmp_path)
    try:
        job_id = f"wall-{uuid.uuid4().hex[:8]}"
        await own_bus.produce("train.requested", {**train_request(job_id, "walled"),
                                                  "hyperparameters": {**LONG, "max_iters": 100_000}}, key=job_id)
        facts = distinct(await own_bus.job(job_id, timeout=120))
    finally:
        worker.stop()
    ended = facts[-1]
    assert ended["type"] == "JobCancelled" and "wall-clock limit of 4s" in ended["reason"], ended
    assert 4 <= time_of(ended) - time_of(facts[0]) < 30  # the run begins (its process starting) after JobAccepted
    assert any(e["type"] == "CheckpointSaved" for e in facts), "the work done is kept"
