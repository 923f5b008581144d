"""Publishing facts: one ordered, retrying outbox per process, and a per-job log that numbers the facts.

Facts must not be lost when the broker goes away for a while, and one job's facts must stay in order. So every
fact goes through one queue, drained by one task that sends in order and, when a send fails, waits and sends the
same batch again. A retried batch may deliver a fact twice; consumers drop repeats by event id (the projector)
or by sequence number (the gateway's streams).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from events import DeadLetter, JobEvent, Topics

log = logging.getLogger(__name__)
E = TypeVar("E", bound=JobEvent)


@dataclass
class _Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    delivered: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Publisher:
    def __init__(self, producer: AIOKafkaProducer, topics: Topics, *, max_batch: int = 500, retry_s: float = 0.5):
        self._producer = producer
        self._topics = topics
        self._queue: asyncio.Queue[_Outgoing] = asyncio.Queue(maxsize=50_000)
        self._max_batch = max_batch
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    async def start(self) -> None:
        await self._producer.start()
        self._task = asyncio.create_task(self._drain(), name="publisher")

    async def stop(self, flush_timeout_s: float = 10.0) -> None:
        if self._task is not None:
            try:
                await asyncio.wait_for(self._queue.join(), flush_timeout_s)
            except TimeoutError:
                log.warning("stopping with %d facts not yet delivered", self._queue.qsize())
            self._task.cancel()
        await self._producer.stop()

    async def publish(self, event: JobEvent, *, wait: bool = False) -> None:
        """Queue a fact for its job's partition; with `wait`, return once the broker has it."""
        outgoing = _Outgoing(self._topics.job_events, event.job_id.encode(), event.to_json())
        await self._queue.put(outgoing)
        if wait:
            await asyncio.shield(outgoing.delivered)

    async def dead_letter(self, letter: DeadLetter) -> None:
        await self._queue.put(_Outgoing(self._topics.dead_letter, letter.job_id.encode() if letter.job_id else None,
                                        letter.to_json()))

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._send_in_order(batch)
            for item in batch:
                if not item.delivered.done():
                    item.delivered.set_result(None)
                self._queue.task_done()
            self.sent += len(batch)

    async def _send_in_order(self, batch: list[_Outgoing]) -> None:
        attempt = 0
        while True:
            try:
                pending = [await self._producer.send(item.topic, item.value, key=item.key) for item in batch]
                await asyncio.gather(*pending)
                return
            except KafkaError as exc:
                attempt += 1
                delay = min(self._retry_s * attempt, 5.0)
                log.warning("could not deliver %d facts (%s); retrying in %.1fs", len(batch), exc, delay)
                await asyncio.sleep(delay)


class JobLog:
    """The facts of one job, numbered 1, 2, 3, ... and stamped with who produced them."""

    def __init__(self, publisher: Publisher, *, job_id: str, kind: str, owner: str | None, producer: str,
                 last_seq: int = 0):
        self.publisher = publisher
        self.job_id = job_id
        self.kind = kind
        self.owner = owner
        self.producer = producer
        self.last_seq = last_seq

    def make(self, cls: type[E], **fields: Any) -> E:
        self.last_seq += 1
        return cls(job_id=self.job_id, seq=self.last_seq, kind=self.kind, owner=self.owner, producer=self.producer,
                   **fields)

    async def emit(self, cls: type[E], *, wait: bool = False, **fields: Any) -> E:
        event = self.make(cls, **fields)
        await self.publisher.publish(event, wait=wait)
        return event
