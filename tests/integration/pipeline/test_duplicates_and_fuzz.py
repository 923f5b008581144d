"""At-least-once delivery without double work, and whatever arrives on the request topics."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from tests.integration.pipeline.conftest import train_request
from tests.integration.pipeline.test_flow import projected
from sqlalchemy import select

from infra.db import create_engine, sessionmaker
from infra.db.tables import Job, Model
from tests.integration.stack import Bus, distinct, poll, recorded, start_worker


async def test_the_same_request_delivered_to_two_workers_gives_one_result(pipeline_env, settings, tmp_path: Path):
    env = {**pipeline_env, "LFZ_TOPIC_PREFIX": f"lfz.test.d{uuid.uuid4().hex[:10]}."}
    bus = Bus(settings.kafka_bootstrap, env["LFZ_TOPIC_PREFIX"])
    workers = [start_worker(name, env, tmp_path) for name in ("dup-a", "dup-b")]
    try:
        job_id = f"dup-{uuid.uuid4().hex[:8]}"
        request = train_request(job_id, "once")
        # The same message three times, on different partitions (no key), as a redelivery after a rebalance would.
        for _ in range(3):
            await bus.produce("train.requested", request)
        await bus.job(job_id, timeout=150)
        # Then the whole topic, once every job on it has ended: nothing else was made of the three deliveries.
        await asyncio.sleep(2)
        everything = await bus.all_facts()
        facts = distinct([e for e in everything if e.get("job_id") == job_id])
        kinds = [e["type"] for e in facts]
        assert kinds.count("TrainCompleted") == 1 and kinds.count("TrainStarted") == 1, kinds
        assert kinds.count("JobAccepted") == 1  # a repeated acceptance carries the same event id
        assert [e["seq"] for e in facts] == list(range(1, len(facts) + 1)), "1..N: no fact made twice"
        assert {e["job_id"] for e in distinct(everything)} == {job_id}, "no other job came of the repeats"
        model_ids = {e["model_id"] for e in facts if e.get("model_id")}
        assert len(model_ids) == 1
        # And in the database: one job, one model, each fact once.
        rows = await asyncio.wait_for(poll(lambda: recorded(settings.resolved_database_url, job_id),
                                           lambda rows: rows and rows[-1][2] == "TrainCompleted"), 60)
        assert [row[0] for row in rows] == [e["event_id"] for e in facts]
        engine = create_engine(settings.resolved_database_url)
        try:
            async with sessionmaker(engine)() as session:
                jobs = (await session.execute(select(Job.id).where(Job.model_id.in_(model_ids)))).scalars().all()
                models = (await session.execute(select(Model.id).where(Model.id.in_(model_ids)))).scalars().all()
        finally:
            await engine.dispose()
        assert jobs == [job_id] and len(models) == 1
    finally:
        for worker in workers:
            worker.stop()


async def test_a_request_delivered_again_while_its_job_runs_is_not_taken_for_a_continue_request(bus, worker,
                                                                                                settings):
    """Regression: the second delivery found the model row of its own job and failed the job with "no checkpoint
    to continue from yet"."""
    job_id = f"again-{uuid.uuid4().hex[:8]}"
    request = {**train_request(job_id, "again"), "hyperparameters": {"preset": "tiny", "max_iters": 400}}
    await bus.produce("train.requested", request, key=job_id)
    await projected(settings, job_id, "running", timeout=60)  # its model row exists now, with no checkpoint yet
    # The same request again, then another job on the same partition: once that one is accepted, the worker has
    # handled the repeat.
    await bus.produce("train.requested", request, key=job_id)
    later = f"later-{uuid.uuid4().hex[:8]}"
    await bus.produce("train.requested", train_request(later, "later"), key=job_id)
    await bus.read("job.events", lambda seen: any(e["type"] == "JobAccepted" for e in seen),
                   where=lambda e: e.get("job_id") == later)
    kinds = [e["type"] for e in distinct(await bus.job(job_id, timeout=180))]
    assert "TrainFailed" not in kinds and kinds.count("TrainCompleted") == 1, kinds
    assert kinds.count("JobAccepted") == 1 and kinds.count("TrainStarted") == 1, kinds
    assert (await bus.job(later, timeout=180))[-1]["type"] == "TrainCompleted"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
near_valid = st.fixed_dictionaries(
    {"type": st.sampled_from(["TrainRequested", "EvaluateRequested", "GenerateRequested", "CancelRequested"])},
    optional={"model_name": json_values | st.text(max_size=20), "dataset": json_values, "prompt": json_values,
              "hyperparameters": json_values, "max_tokens": json_values, "job_id": json_values,
              "request_id": json_values, "tokenizer": json_values},
)
messages = st.lists(
    st.tuples(st.sampled_from(["train.requested", "evaluate.requested", "generate.requested", "job.control"]),
              st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode())
              | near_valid.map(lambda v: json.dumps(v).encode())),
    min_size=40, max_size=40,
)


@hsettings(max_examples=1, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(batch=messages)
def test_random_messages_on_every_request_topic_end_as_dead_letters_or_jobs(batch, bus, worker):
    import asyncio

    asyncio.run(_fuzz(batch, bus, worker))


async def _fuzz(batch, bus: Bus, worker) -> None:
    marker = uuid.uuid4().hex
    for topic, raw in batch:
        await bus.produce(topic, raw)
    # A last, valid request behind them all: when it is served, everything before it was consumed.
    job_id = f"after-fuzz-{marker[:8]}"
    await bus.produce("train.requested", train_request(job_id, "after-fuzz"), key=job_id)
    assert (await bus.job(job_id, timeout=240))[-1]["type"] == "TrainCompleted"
    assert worker.alive(), worker.tail()
    letters = await bus.read("dead.letter", lambda seen: True, timeout=5)
    assert letters, "undecodable messages are kept as dead letters"
    assert all(letter["error"] and letter["topic"].startswith(bus.prefix) for letter in letters)
