"""A sweep on two workers, through bare Kafka: its trials are ordinary training jobs spread over both workers, the
early-stopping rule cancels a trial whose learning rate is far too high before its end, the best trial is aliased,
and killing the worker that coordinates a sweep moves the sweep to the other one."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from sqlalchemy import select

from events import DatasetRef, SweepRequested
from infra.db import create_engine, sessionmaker
from infra.db.tables import Job, JobQueueRow, ModelAlias
from infra.search_space import draw
from tests.integration.pipeline.conftest import corpus
from tests.integration.stack import Bus, distinct, start_worker

BAD = 1.0  # a learning rate far too high: the loss stays near that of guessing (about 2.9 against 1.6-2.0)


def sweep_request(sweep_id: str, name: str, **extra: object) -> dict:
    return {"type": "SweepRequested", "job_id": sweep_id, "model_name": name, "dataset": {"text": corpus(200)},
            "hyperparameters": {"preset": "tiny", "max_iters": 800, "eval_every": 25, "checkpoint_every": 400},
            "space": {"learning_rate": {"values": [3e-3, 5e-3, 1e-2, BAD]}}, "method": "random", "trials": 6,
            "seed": 3, "early_stopping": {"rule": "median", "min_step": 50, "min_trials": 1}, "alias": "champion",
            **extra}


async def test_a_random_sweep_on_two_workers_stops_a_bad_trial_and_aliases_the_best(pipeline_env, settings,
                                                                                   tmp_path: Path):
    # Two workers on one machine: one thread each, or their jobs' thread pools fight over the cores.
    env = {**pipeline_env, "LFZ_TOPIC_PREFIX": f"lfz.test.s{uuid.uuid4().hex[:10]}.", "LFZ_TORCH_THREADS": "1"}
    bus = Bus(settings.kafka_bootstrap, env["LFZ_TOPIC_PREFIX"])
    sweep_id, name = f"sweep-{uuid.uuid4().hex[:8]}", f"swept-{uuid.uuid4().hex[:6]}"
    request = sweep_request(sweep_id, name)
    drawn = draw(SweepRequested.model_validate({**request, "dataset": DatasetRef(text="x")}))
    assert BAD in [t["learning_rate"] for t in drawn] and len(drawn) == 6  # the seed draws the bad rate
    workers = [start_worker(worker, env, tmp_path) for worker in ("sweep-a", "sweep-b")]
    try:
        await bus.produce("sweep.requested", request, key=sweep_id)
        facts = await bus.job(sweep_id, timeout=240)
        assert facts[-1]["type"] == "SweepCompleted", facts[-1]
        started = next(f for f in facts if f["type"] == "SweepStarted")
        trials = {t["index"]: t for t in started["trials"]}
        stopped = [f for f in distinct(facts) if f["type"] == "SweepTrialStopped"]
        bad = {i for i, t in trials.items() if t["parameters"]["learning_rate"] == BAD}
        assert bad & {s["index"] for s in stopped}, (bad, stopped)  # a bad trial was cancelled early ...
        for stop in stopped:
            trial_facts = await bus.job(stop["trial_job_id"], timeout=60)
            assert trial_facts[-1]["type"] == "JobCancelled" and "early stopping" in trial_facts[-1]["reason"]
            assert trial_facts[-1]["step"] < 800  # ... before its end
        end = facts[-1]
        assert end["best"]["parameters"]["learning_rate"] != BAD and end["alias"] == "champion"
        assert end["completed"] + end["stopped"] + end["failed"] == 6 and end["steps_run"] < end["steps_planned"]
        # Both workers trained trials; the alias points at the best trial's version.
        workers_seen = set()
        for trial in trials.values():
            first = next(f for f in await bus.job_until(trial["job_id"], lambda seen: any(
                f["type"] in ("TrainStarted", "JobCancelled") for f in seen), 60) if f["type"] in (
                "TrainStarted", "JobCancelled"))
            workers_seen.add(first.get("worker"))
        assert {"sweep-a", "sweep-b"} <= workers_seen, workers_seen
        engine = create_engine(settings.resolved_database_url)
        try:
            async with sessionmaker(engine)() as session:
                alias = (await session.execute(select(ModelAlias).where(ModelAlias.name == name))).scalar_one()
                sweep = await session.get(Job, sweep_id)
            assert alias.model_id == end["best"]["model_id"] and sweep.status == "completed"
        finally:
            await engine.dispose()
    finally:
        for worker in workers:
            worker.stop()


async def test_a_sweep_goes_on_when_the_worker_coordinating_it_is_killed(pipeline_env, settings, tmp_path: Path):
    env = {**pipeline_env, "LFZ_TOPIC_PREFIX": f"lfz.test.s{uuid.uuid4().hex[:10]}.", "LFZ_TORCH_THREADS": "1"}
    bus = Bus(settings.kafka_bootstrap, env["LFZ_TOPIC_PREFIX"])
    sweep_id, name = f"sweep-{uuid.uuid4().hex[:8]}", f"swept-{uuid.uuid4().hex[:6]}"
    request = sweep_request(sweep_id, name, trials=4, early_stopping={"rule": "none"},
                            hyperparameters={"preset": "tiny", "max_iters": 400, "eval_every": 50})
    workers = {worker: start_worker(worker, env, tmp_path) for worker in ("sweep-c", "sweep-d")}
    engine = create_engine(settings.resolved_database_url)
    try:
        await bus.produce("sweep.requested", request, key=sweep_id)
        await bus.job_until(sweep_id, lambda seen: any(f["type"] == "SweepStarted" for f in seen), 60)
        async with sessionmaker(engine)() as session:
            coordinator = (await session.execute(select(JobQueueRow.worker).where(
                JobQueueRow.job_id == sweep_id, JobQueueRow.namespace == env["LFZ_TOPIC_PREFIX"]))).scalar_one()
        workers[coordinator].kill()  # kill -9: no hand-back; its lease lapses
        facts = await bus.job(sweep_id, timeout=240)
        assert facts[-1]["type"] == "SweepCompleted" and facts[-1]["completed"] == 4, facts[-1]
        for _ in range(50):  # its end is published, then marked done in the queue
            async with sessionmaker(engine)() as session:
                now = (await session.execute(select(JobQueueRow).where(
                    JobQueueRow.job_id == sweep_id, JobQueueRow.namespace == env["LFZ_TOPIC_PREFIX"]))).scalar_one()
            if now.state == "done":
                break
            await asyncio.sleep(0.1)
        assert now.worker != coordinator and now.takeovers == 1 and now.state == "done"
        assert sorted({f["seq"] for f in distinct(facts)}) == list(range(1, len(distinct(facts)) + 1))
    finally:
        await engine.dispose()
        for worker in workers.values():
            worker.stop()
