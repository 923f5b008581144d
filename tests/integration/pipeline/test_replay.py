"""The database is a projection of the log: replaying the topic into empty tables rebuilds the same state."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from agents.record.replay import rebuild, replay
from infra.joblog import read_topic
from infra.db import create_engine, sessionmaker
from infra.db import migrate
from infra.db.tables import Checkpoint, Evaluation, Job, JobEventRow, Model, ModelAlias
from tests.integration.pipeline.conftest import train_request


async def _state(url: str, job_ids: set[str]) -> dict:
    engine = create_engine(url)
    try:
        async with sessionmaker(engine)() as session:
            jobs = (await session.execute(select(Job).where(Job.id.in_(job_ids)).order_by(Job.id))).scalars().all()
            model_ids = {job.model_id for job in jobs if job.model_id}
            models = (await session.execute(select(Model).where(Model.id.in_(model_ids)).order_by(Model.id))).scalars()
            rows = (await session.execute(select(JobEventRow).where(JobEventRow.job_id.in_(job_ids)))).scalars()
            checkpoints = (await session.execute(select(Checkpoint).where(Checkpoint.model_id.in_(model_ids)))).scalars()
            evaluations = (await session.execute(select(Evaluation).where(Evaluation.model_id.in_(model_ids)))).scalars()
            return {
                "jobs": [(j.id, j.kind, j.status, j.progress, j.step, j.loss, j.val_loss, j.error, j.last_seq, j.result)
                         for j in jobs],
                "models": [(m.id, m.name, m.version, m.parent_id, m.serve, m.status, m.step, m.num_parameters,
                            m.metrics, m.latest_checkpoint, m.best_checkpoint, m.config) for m in models],
                "aliases": sorted((a.name, a.alias, a.model_id) for a in (await session.execute(
                    select(ModelAlias).where(ModelAlias.model_id.in_(model_ids)))).scalars()),
                "log": sorted((r.event_id, r.job_id, r.seq, r.type, r.data["time"]) for r in rows),
                "checkpoints": sorted((c.key, c.step, c.sha256) for c in checkpoints),
                "evaluations": sorted((e.id, e.model_id, e.report_key) for e in evaluations),
            }
    finally:
        await engine.dispose()


async def _wait_projected(url: str, count: int, job_ids: set[str]) -> None:
    for _ in range(150):
        if len((await _state(url, job_ids))["log"]) >= count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the projection did not catch up with the log")


async def _settled_log(settings, timeout: float = 180) -> list:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        facts = (await read_topic(settings)).facts
        open_jobs = {r.event.job_id for r in facts} - {r.event.job_id for r in facts if r.event.terminal}
        if not open_jobs:
            return facts
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"jobs still open in the log: {sorted(open_jobs)}")
        await asyncio.sleep(1)


async def test_replaying_the_topic_into_empty_tables_rebuilds_the_same_state(bus, worker, settings,
                                                                            test_database_url):
    job_id = f"replay-{uuid.uuid4().hex[:8]}"
    name = f"replayed-{uuid.uuid4().hex[:6]}"
    await bus.produce("train.requested", train_request(job_id, name), key=job_id)
    assert (await bus.job(job_id, timeout=120))[-1]["type"] == "TrainCompleted"
    # Version 2 continues version 1 (a bare Kafka request names its parent); an alias and a serving choice, as the
    # gateway publishes them, point at the versions.
    first_id = (await bus.job(job_id))[0]["model_id"]
    more_id = f"replay-more-{uuid.uuid4().hex[:6]}"
    await bus.produce("train.requested", train_request(more_id, name, parent_id=first_id), key=more_id)
    continued = await bus.job(more_id, timeout=120)
    assert continued[-1]["type"] == "TrainCompleted", (continued[-1].get("reason"), continued[-1].get("field"))
    assert continued[0]["parent_id"] == first_id
    second_id = continued[0]["model_id"]
    registry = [
        {"type": "ModelAliasSet", "job_id": f"alias-{uuid.uuid4().hex[:8]}", "name": name, "alias": "champion",
         "model_id": first_id, "version": 1},
        {"type": "ServingCheckpointChosen", "job_id": f"serve-{uuid.uuid4().hex[:8]}", "model_id": second_id,
         "checkpoint": "last"},
    ]
    for fact in registry:
        fact.update(event_id=uuid.uuid4().hex, seq=1, time=datetime.now(UTC).isoformat(), producer="test", kind="registry")
        await bus.produce("job.events", fact, key=fact["job_id"])
    eval_id = f"replay-eval-{uuid.uuid4().hex[:6]}"
    await bus.produce("evaluate.requested", {"type": "EvaluateRequested", "job_id": eval_id, "model_name": name,
                                             "prompts": ["The"], "max_new_tokens": 8}, key=eval_id)
    assert (await bus.job(eval_id))[-1]["type"] == "EvaluationCompleted"

    session_settings = settings.model_copy(update={"topic_prefix": bus.prefix})
    # The session's topic also holds the jobs of earlier tests, some maybe still queued behind these: wait until
    # every job in it has ended, so that the log is the same each time it is read below.
    facts = await _settled_log(session_settings)
    job_ids = {recorded.event.job_id for recorded in facts}
    assert {job_id, eval_id} <= job_ids

    await asyncio.to_thread(migrate, test_database_url, True)
    report = await rebuild(test_database_url, facts)
    # Other tests of the session put forged facts on this topic: the projection turns those away, live and replayed.
    assert report.applied + report.turned_away == len({r.event.event_id for r in facts})
    await _wait_projected(settings.resolved_database_url, report.applied, job_ids)
    live = await _state(settings.resolved_database_url, job_ids)
    rebuilt = await _state(test_database_url, job_ids)
    assert rebuilt == live
    versions = {m[0]: m[2:5] for m in live["models"]}
    assert versions[first_id] == (1, None, "best") and versions[second_id] == (2, first_id, "last")
    assert live["aliases"] == [(name, "champion", first_id)]
    # Replaying again over the rebuilt tables gives the same state once more.
    await replay(session_settings, "kafka", into=test_database_url)
    assert await _state(test_database_url, job_ids) == live
