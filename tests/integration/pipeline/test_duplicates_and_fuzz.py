"""At-least-once delivery without double work, and whatever arrives on the request topics."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from events import (
    CancelRequested,
    DecodeError,
    EvaluateRequested,
    ExportRequested,
    GenerateRequested,
    ImportRequested,
    TrainRequested,
    decode_command,
    decode_event,
)

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
        # The inline text becomes a dataset once (none when an earlier test stored the same text already).
        uploads = [e for e in distinct(everything) if e["kind"] == "dataset"]
        assert len(uploads) <= 1 and all(e["type"] == "DatasetUploaded" for e in uploads), uploads
        jobs = {e["job_id"] for e in distinct(everything) if e["kind"] != "dataset"}
        assert jobs == {job_id}, "no other job came of the repeats"
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
COMMAND_OF_TOPIC = {"train.requested": TrainRequested, "evaluate.requested": EvaluateRequested,
                    "generate.requested": GenerateRequested, "export.requested": ExportRequested,
                    "import.requested": ImportRequested, "job.control": CancelRequested}
PER_TOPIC = 250
payloads = (st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode())
            | near_valid.map(lambda v: json.dumps(v).encode()))
batches = st.fixed_dictionaries({topic: st.lists(payloads, min_size=PER_TOPIC, max_size=PER_TOPIC)
                                 for topic in (*COMMAND_OF_TOPIC, "job.events")})


@hsettings(max_examples=1, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(batch=batches)
def test_random_messages_on_every_topic_end_as_dead_letters_or_jobs(batch, bus, worker):
    """PER_TOPIC generated messages on each request topic, the control topic and the job-events topic: every one that
    does not decode as what its topic carries is a dead letter naming that topic and offset, and the worker serves a
    valid request behind them all."""
    asyncio.run(_fuzz(batch, bus, worker))


def _decodes(topic: str, raw: bytes) -> bool:
    try:
        if topic == "job.events":
            decode_event(raw)
        else:
            decode_command(raw, (COMMAND_OF_TOPIC[topic],))
        return True
    except DecodeError:
        return False


async def _fuzz(batch: dict[str, list[bytes]], bus: Bus, worker) -> None:
    must_be_letters: dict[str, set[tuple[int, int]]] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bus.bootstrap)
    await producer.start()
    try:
        for topic, raws in batch.items():
            for raw in raws:
                sent = await producer.send_and_wait(bus.prefix + topic, raw)
                if not _decodes(topic, raw):
                    must_be_letters.setdefault(bus.prefix + topic, set()).add((sent.partition, sent.offset))
    finally:
        await producer.stop()
    # A last, valid request behind them all: when it is served, the train topic's messages were all consumed.
    job_id = f"after-fuzz-{uuid.uuid4().hex[:8]}"
    await bus.produce("train.requested", train_request(job_id, "after-fuzz"), key=job_id)
    assert (await bus.job(job_id, timeout=240))[-1]["type"] == "TrainCompleted"
    assert worker.alive(), worker.tail()

    def lettered(seen: list[dict]) -> dict[str, set[tuple[int, int]]]:
        found: dict[str, set[tuple[int, int]]] = {}
        for letter in seen:
            found.setdefault(letter["topic"], set()).add((letter["partition"], letter["offset"]))
        return found

    def covered(seen: list[dict]) -> bool:
        found = lettered(seen)
        return all(positions <= found.get(topic, set()) for topic, positions in must_be_letters.items())

    letters = await bus.read("dead.letter", covered, timeout=90, where=lambda m: m.get("topic") in must_be_letters)
    assert all(letter["error"] for letter in letters)
    counts = {topic.removeprefix(bus.prefix): f"{len(batch[topic.removeprefix(bus.prefix)])} sent, {len(positions)} "
              f"undecodable, all dead letters" for topic, positions in must_be_letters.items()}
    print(f"\nfuzzed topics: {counts}")
