"""The job-events topic read back: every fact up to its end (what a replay applies), and one job's last sequence
number there (where a run that takes a job over continues its log).

A fact that does not decode is skipped here and counted; the record agent has dead-lettered it when it met it live.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from events import DecodeError, JobEvent, Topics, decode_event
from infra.kafka import client_options, partitions, stop_consumer
from infra.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recorded:
    """A fact and where it was read from."""

    event: JobEvent
    partition: int | None = None
    offset: int | None = None


@dataclass
class TopicRead:
    facts: list[Recorded]
    undecodable: int = 0


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False,
                            auto_offset_reset="earliest", group_id=None)


async def read_topic(settings: Settings) -> TopicRead:
    """Every fact on the job-events topic up to its end now, in the order they happened.

    Each partition keeps its own order (a job's facts are in one partition); the partitions are merged by the facts'
    times, so that a fact about a model from one job (an evaluation) comes after the facts it follows from another
    job (the training that made the model), as it did when the record agent recorded them live. Reading partitions
    one after the other instead gave a different state depending on which partition came first."""
    topic = Topics(settings.topic_prefix).job_events
    read = TopicRead([])
    consumer = _consumer(settings)
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in await partitions(settings, topic)]
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        await consumer.seek_to_beginning(*assigned)
        by_partition: dict[int, list[Recorded]] = {tp.partition: [] for tp in assigned}
        remaining = {tp for tp in assigned if ends[tp] > 0}
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
                        read.undecodable += 1
                        log.warning("skipping undecodable fact at %s@%d: %s", tp, message.offset, error)
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        read.facts = in_time_order(by_partition.values())
        return read
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
    consumer = _consumer(settings)
    await consumer.start()
    try:
        if after is not None:
            tp, start = TopicPartition(topic, after[0]), after[1]
        else:
            known = await partitions(settings, topic)
            tp, start = TopicPartition(topic, DefaultPartitioner()(job_id.encode(), known, known)), 0
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
