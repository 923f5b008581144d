"""The ordered sender: it waits out what may pass and never retries what Kafka refuses for good."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

from events import JobAccepted, Topics
from infra.kafka import MessageRefused
from infra.publisher import JobLog, Publisher

TOPICS = Topics("t.")


class FakeProducer:
    """Takes messages like AIOKafkaProducer; `refuse` says which values it refuses for good; for `down_s` seconds
    from the first send every send fails as if the broker were unreachable."""

    def __init__(self, refuse=lambda value: False, down_s: float = 0.0):
        self.refuse = refuse
        self.down_s = down_s
        self.down_until: float | None = None
        self.failures = 0
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def start(self):
        pass

    async def stop(self):
        pass

    async def send(self, topic, value, key=None, headers=None):
        if self.refuse(value):
            raise MessageSizeTooLargeError("The message is 2000000 bytes when serialized")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self.down_until is None:
            self.down_until = loop.time() + self.down_s
        if loop.time() < self.down_until:
            self.failures += 1
            future.set_exception(KafkaTimeoutError() if self.failures % 2 else KafkaConnectionError())
        else:
            self.sent.append((topic, key, value))
            future.set_result(None)
        return future

    async def send_and_wait(self, topic, value, key=None, headers=None):
        return await (await self.send(topic, value, key, headers))


def facts(publisher: Publisher, job_id: str, count: int, big_at: int | None = None) -> list:
    log = JobLog(publisher, job_id=job_id, kind="train", owner=None)
    return [log.make(JobAccepted, description=("x" * 2_000_000 if i == big_at else "")) for i in range(count)]


async def test_a_fact_kafka_refuses_for_good_is_dead_lettered_and_the_next_ones_are_delivered():
    producer = FakeProducer(refuse=lambda value: len(value) > 1_000_000)
    publisher = Publisher(producer, TOPICS, "agents/w1", retry_s=0.01)
    await publisher.start()
    try:
        for fact in facts(publisher, "j1", 4, big_at=1):
            await publisher.publish(fact)
        await asyncio.wait_for(publisher._queue.join(), 5)
    finally:
        await publisher.stop()
    delivered = [json.loads(value) for topic, _, value in producer.sent if topic == TOPICS.job_events]
    assert [fact["seq"] for fact in delivered] == [1, 3, 4]
    letters = [json.loads(value) for topic, _, value in producer.sent if topic == TOPICS.dead_letter]
    assert len(letters) == 1 and letters[0]["job_id"] == "j1" and letters[0]["topic"] == TOPICS.job_events
    assert "MessageSizeTooLargeError" in letters[0]["error"] and "a message of 2,000," in letters[0]["error"]
    assert '"seq":2' in letters[0]["payload_text"]


async def test_an_outage_is_waited_out_and_the_batch_sent_again_in_order():
    producer = FakeProducer(down_s=0.1)
    publisher = Publisher(producer, TOPICS, "agents/w1", retry_s=0.01)
    await publisher.start()
    try:
        for fact in facts(publisher, "j2", 5):
            await publisher.publish(fact)
        await asyncio.wait_for(publisher._queue.join(), 10)
    finally:
        await publisher.stop()
    seqs = [json.loads(value)["seq"] for topic, _, value in producer.sent if topic == TOPICS.job_events]
    assert producer.failures >= 5  # it did wait out an outage, of timeouts too (which aiokafka calls not retriable)
    assert seqs == [1, 2, 3, 4, 5] and not any(t == TOPICS.dead_letter for t, _, _ in producer.sent)


async def test_send_raises_message_refused_and_never_retries_it():
    producer = FakeProducer(refuse=lambda value: True)
    publisher = Publisher(producer, TOPICS, "gateway/g1")
    with pytest.raises(MessageRefused, match="refused a message of 5 bytes"):
        await publisher.send(TOPICS.train_requested, "k", b"12345")
    assert producer.sent == []
