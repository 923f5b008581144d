"""Rebuilding the database from the log: drop the projection's tables, then apply every fact again, in order.

The source is the job-events topic read from its beginning (`kafka`), or, for the embedded broker that keeps
nothing across restarts, the log the database itself holds in `job_events` (`database`). The job queue is left
alone: it is coordination between workers, not a projection.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import select

from agents.projection import Recorded, apply_batch
from events import DecodeError, Topics, decode_event
from infra.db import create_engine, sessionmaker
from infra.db.tables import PROJECTION_TABLES, Base, JobEventRow
from infra.kafka import bootstrap_servers, stop_consumer
from infra.settings import Settings

log = logging.getLogger(__name__)
BATCH = 500


@dataclass
class ReplayReport:
    read: int = 0
    applied: int = 0
    undecodable: int = 0


async def _partitions(settings: Settings, topic: str) -> list[int]:
    """The topic's partitions, from the cluster (a consumer that subscribed to nothing does not know them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for d in described if d["topic"] == topic for p in d["partitions"])


async def read_topic(settings: Settings) -> list[Recorded]:
    """Every fact on the job-events topic up to its end now, in the order they happened.

    Each partition keeps its own order (a job's facts are in one partition); the partitions are merged by the facts'
    times, so that a fact about a model from one job (an evaluation) comes after the facts it follows from another
    job (the training that made the model), as it did when the projector recorded them live. Reading partitions
    one after the other instead gave a different state depending on which partition came first."""
    topic = Topics(settings.topic_prefix).job_events
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(settings), enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await _partitions(settings, topic)]
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        by_partition: dict[int, list[Recorded]] = {tp.partition: [] for tp in partitions}
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        continue
                    try:
                        by_partition[tp.partition].append(Recorded(decode_event(message.value), tp.partition,
                                                                   message.offset))
                    except DecodeError as error:
                        log.warning("skipping undecodable fact at %s@%d: %s", tp, message.offset, error)
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return in_time_order(by_partition.values())
    finally:
        await stop_consumer(consumer)


def in_time_order(partitions: Iterable[list[Recorded]]) -> list[Recorded]:
    """One sequence of the partitions' facts that keeps each partition's own order, taking the earliest fact at the
    head of any partition next."""
    return list(heapq.merge(*partitions, key=lambda recorded: recorded.event.time))


async def last_seq_in_log(settings: Settings, job_id: str, after: tuple[int, int] | None = None) -> int:
    """The highest sequence number of a job's facts on the topic itself, whatever the projection has seen.

    `after` is `(partition, offset)` of a fact of the job known to be recorded; the scan starts there instead of
    at the beginning of the job's partition.
    """
    topic = Topics(settings.topic_prefix).job_events
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(settings), enable_auto_commit=False,
                                group_id=None)
    await consumer.start()
    try:
        partitions = await _partitions(settings, topic)
        if not partitions:
            raise RuntimeError(f"topic {topic} has no partitions in the cluster's metadata")
        if after is not None:
            tp, start = TopicPartition(topic, after[0]), after[1]
        else:
            tp, start = TopicPartition(topic, DefaultPartitioner()(job_id.encode(), partitions, partitions)), 0
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, start)
        highest = 0
        while await consumer.position(tp) < end:
            for message in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if message.offset < end and message.key == job_id.encode():
                    try:
                        highest = max(highest, decode_event(message.value).seq)
                    except DecodeError:
                        continue
        return highest
    finally:
        await stop_consumer(consumer)


async def read_table(url: str) -> list[Recorded]:
    engine = create_engine(url)
    try:
        async with sessionmaker(engine)() as session:
            rows = (await session.execute(select(JobEventRow).order_by(JobEventRow.position))).scalars().all()
            return [Recorded(decode_event(row.data), row.kafka_partition, row.kafka_offset) for row in rows]
    finally:
        await engine.dispose()


async def rebuild(url: str, facts: list[Recorded]) -> ReplayReport:
    """Empty the projection's tables at `url` and apply `facts` to them."""
    engine = create_engine(url)
    report = ReplayReport(read=len(facts))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: Base.metadata.drop_all(sync, tables=list(PROJECTION_TABLES)))
            await connection.run_sync(lambda sync: Base.metadata.create_all(sync, tables=list(PROJECTION_TABLES)))
        sessions = sessionmaker(engine)
        for start in range(0, len(facts), BATCH):
            async with sessions() as session:
                report.applied += await apply_batch(session, facts[start:start + BATCH])
                await session.commit()
    finally:
        await engine.dispose()
    return report


async def replay(settings: Settings, source: str = "kafka", into: str | None = None) -> ReplayReport:
    if source == "kafka":
        facts = await read_topic(settings)
    elif source == "database":
        facts = await read_table(settings.resolved_database_url)
    else:
        raise ValueError(f"source must be kafka or database, not {source!r}")
    return await rebuild(into or settings.resolved_database_url, facts)


if __name__ == "__main__":  # python -m agents.replay [kafka|database]
    import sys

    from infra.settings import load_settings

    print(asyncio.run(replay(load_settings(), *(sys.argv[1:2] or ["kafka"]))))
