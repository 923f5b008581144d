"""The real Kafka of `make services`: a message goes in through a producer and comes out through a consumer group."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def test_produce_then_consume_with_a_consumer_group(kafka_bootstrap: str, unique: str) -> None:
    topic = f"test.kafka.{unique}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topic, f"m{i}".encode(), key=f"k{i % 3}".encode()) for i in range(6)]
    finally:
        await producer.stop()
    assert {meta.topic for meta in sent} == {topic}

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"test-{unique}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received: list[tuple[bytes, bytes]] = []
        async with asyncio.timeout(20):
            while len(received) < 6:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    received += [(m.key, m.value) for m in messages]
        await consumer.commit()
        committed = {tp: await consumer.committed(tp) for tp in consumer.assignment()}
    finally:
        await consumer.stop()

    assert sorted(value for _, value in received) == [f"m{i}".encode() for i in range(6)]
    # Messages with one key land on one partition, in order.
    assert [v for k, v in received if k == b"k0"] == [b"m0", b"m3"]
    assert sum(offset or 0 for offset in committed.values()) == 6


async def test_topics_auto_created_on_first_use_get_four_partitions(kafka_bootstrap: str, unique: str) -> None:
    topic = f"test.auto.{unique}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"x")
        partitions = producer.client.cluster.partitions_for_topic(topic)
    finally:
        await producer.stop()
    assert partitions == {0, 1, 2, 3}

