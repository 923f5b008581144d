"""One Faust agent end to end, against any Kafka-compatible broker (the real Kafka, the embedded Tansu).

The agent reads `Ping` records from one topic, counts them per key in a table (so a changelog topic is written),
and sends the doubled value to another topic. The Faust app runs inside the test's event loop (`app.start()`),
with unique topic and group names per run, so runs never meet.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

PARTITIONS = 4


class Ping(faust.Record, serializer="json"):
    n: int


@dataclass
class RoundTrip:
    startup_s: float
    outputs: list[int]
    counts: dict[str, int]
    changelog_messages: int
    committed: int


async def run_doubling_agent(bootstrap: str, datadir: Path, *, messages: int = 12, timeout: float = 20.0) -> RoundTrip:
    uid = uuid.uuid4().hex[:12]
    app_id = f"lfz-test-faust-{uid}"
    source, sink = f"test.faust.in.{uid}", f"test.faust.out.{uid}"
    # Faust creates its internal topics (changelogs) but not the topics an agent reads, and a topic that is missing
    # when the group forms gets no consumer until the next rebalance: the system creates its topics up front
    # (infra.kafka.ensure_topics), and so does this test.
    await _create_topics(bootstrap, [source, sink])

    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(datadir / app_id),
        web_enabled=False,
        autodiscover=False,
        topic_partitions=PARTITIONS,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        # Tansu answers a group's first JoinGroup after half the session timeout: keep it short (Kafka's minimum).
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=0.5,
        stream_wait_empty=False,
    )
    source_topic = app.topic(source, value_type=Ping, partitions=PARTITIONS)
    sink_topic = app.topic(sink, value_type=Ping, partitions=PARTITIONS)
    counts = app.Table("counts", default=int, partitions=PARTITIONS)

    @app.agent(source_topic)
    async def double_pings(stream: faust.StreamT[Ping]) -> None:
        async for key, ping in stream.items():
            counts[key] += 1
            await sink_topic.send(key=key, value=Ping(n=ping.n * 2))

    started = time.monotonic()
    await app.start()
    try:
        startup_s = time.monotonic() - started
        await _produce(bootstrap, source, [(f"k{i % 3}".encode(), Ping(n=i).dumps()) for i in range(messages)])
        outputs = [json.loads(value)["n"] for value in await _read_all(bootstrap, sink, messages, timeout)]
        changelog = counts.changelog_topic.get_topic_name()
        changelog_messages = len(await _read_all(bootstrap, changelog, messages, timeout))
        committed = await _committed(bootstrap, app_id, source, messages, timeout)
        table = {key.decode(): value for key, value in counts.items()}
    finally:
        await app.stop()
    return RoundTrip(startup_s, sorted(outputs), table, changelog_messages, committed)


def assert_round_trip(result: RoundTrip, messages: int = 12) -> None:
    assert result.outputs == sorted(2 * i for i in range(messages)), result
    assert result.counts == {f"k{k}": len(range(k, messages, 3)) for k in range(3)}, result
    assert result.changelog_messages == messages, result
    assert result.committed == messages, result


async def _create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1) for name in names])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, expected: int, timeout: float) -> list[bytes]:
    """Every value on `topic` from the start, read without a group, until `expected` arrived or time ran out."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(values) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                values += [message.value for message in batch if message.value is not None]
    finally:
        await consumer.stop()
    return values


async def _committed(bootstrap: str, group: str, topic: str, expected: int, timeout: float) -> int:
    """The group's committed offsets on `topic`, summed, once they reach `expected` (or when time runs out).

    Read through a consumer that names the group but subscribes to nothing, so it never joins (no rebalance).
    The admin client's `list_consumer_group_offsets` would be simpler, but Tansu's answer to it does not decode.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    total = 0
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            offsets = [await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)]
            total = sum(offset or 0 for offset in offsets)
            if total >= expected:
                break
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
    return total
