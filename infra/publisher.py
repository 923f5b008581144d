"""Sending to Kafka: one `Publisher` per process (gateway or agents worker), and `JobLog`, which numbers a job's facts.

A message is sent one of two ways:
- `send` (a command, or a fact the gateway itself makes) waits for the broker's acknowledgement and raises
  `KafkaUnavailable` when it does not come in time: the caller answers 503 and nothing is half done;
- `publish` (the agents' facts) queues the fact for one ordered sender, which waits out a broker outage and sends the
  same batch again, so that no fact is lost and one job's facts stay in order. A retried batch may deliver a fact
  twice; consumers drop repeats by event id (the projection) or by sequence number (the gateway's streams).

What Kafka refuses for good (`REFUSED_FOR_GOOD`: a message over the broker's size limit, above all) is never retried:
`send` raises `MessageRefused`, and `publish` puts the fact on the dead-letter topic (its first 64 KiB, and why) and
goes on with the next, so that one bad fact cannot block every later fact of the process.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from events import Command, DeadLetter, DecodeError, JobEvent, Topics, dead_letter
from events.proof import Headers, Signer
from infra.kafka import REFUSED_FOR_GOOD, KafkaUnavailable, MessageRefused
from infra.retry import while_down

log = logging.getLogger(__name__)
E = TypeVar("E", bound=JobEvent)
SEND_TIMEOUT_S = 15.0


@dataclass
class _Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    delivered: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    refused: KafkaError | None = None


class Publisher:
    def __init__(self, producer: AIOKafkaProducer, topics: Topics, producer_id: str, *, max_batch: int = 500,
                 retry_s: float = 0.5, send_timeout_s: float = SEND_TIMEOUT_S, signer: Signer | None = None):
        self.producer = producer
        self.signer = signer or Signer([])  # proves each command's owner when API keys are configured
        self.topics = topics
        self.producer_id = producer_id  # `gateway/<host>-<pid>` or `agents/<worker>`: the `producer` of its facts
        self._queue: asyncio.Queue[_Outgoing] = asyncio.Queue(maxsize=50_000)
        self._max_batch = max_batch
        self._retry_s = retry_s
        self._send_timeout_s = send_timeout_s
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    async def start(self) -> None:
        await self.producer.start()
        self._task = asyncio.create_task(self._drain(), name="publisher")

    async def stop(self, flush_timeout_s: float = 10.0) -> None:
        if self._task is not None:
            try:
                await asyncio.wait_for(self._queue.join(), flush_timeout_s)
            except TimeoutError:
                log.warning("stopping with %d facts not yet delivered", self._queue.qsize())
            self._task.cancel()
        await self.producer.stop()

    # -- sent now, or an error --------------------------------------------------------------------------------------

    async def send(self, topic: str, key: str, value: bytes, headers: Headers | None = None) -> None:
        """Send and wait for the acknowledgement; KafkaUnavailable when it does not come within the timeout."""
        try:
            async with asyncio.timeout(self._send_timeout_s):
                await self.producer.send_and_wait(topic, value, key=key.encode(), headers=headers or None)
        except TimeoutError:
            raise KafkaUnavailable(f"Kafka did not acknowledge a message on {topic} within "
                                   f"{self._send_timeout_s:g}s") from None
        except REFUSED_FOR_GOOD as error:
            raise MessageRefused(f"Kafka refused a message of {len(value):,} bytes on {topic}: "
                                 f"{type(error).__name__}") from error
        except KafkaError as error:
            raise KafkaUnavailable(f"Kafka did not take a message on {topic}: {error}") from error

    async def command(self, topic: str, key: str, command: Command) -> None:
        value = command.to_json()
        await self.send(topic, key, value, self.signer.headers(command.owner, value))  # type: ignore[attr-defined]

    async def fact(self, event: JobEvent) -> None:
        await self.send(self.topics.job_events, event.job_id, event.to_json())

    # -- queued, in order, retried until delivered ------------------------------------------------------------------

    async def publish(self, event: JobEvent, *, wait: bool = False) -> None:
        """Queue a fact for its job's partition; with `wait`, return once the broker has it."""
        outgoing = _Outgoing(self.topics.job_events, event.job_id.encode(), event.to_json())
        await self._queue.put(outgoing)
        if wait:
            await asyncio.shield(outgoing.delivered)

    async def dead_letter(self, letter: DeadLetter) -> None:
        await self._queue.put(_Outgoing(self.topics.dead_letter, letter.job_id.encode() if letter.job_id else None,
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
        async def send() -> None:
            pending = []
            for item in batch:
                if item.refused is not None:
                    continue
                try:
                    pending.append((item, await self.producer.send(item.topic, item.value, key=item.key)))
                except REFUSED_FOR_GOOD as error:  # the producer checks the size before it sends
                    item.refused = error
            results = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
            for (item, _), result in zip(pending, results):
                if isinstance(result, REFUSED_FOR_GOOD):
                    item.refused = result
            failed = next((r for r in results if isinstance(r, BaseException) and not isinstance(r, REFUSED_FOR_GOOD)),
                          None)
            if failed is not None:  # the whole batch again, in order, but for what was refused for good
                raise failed

        await while_down(send, (KafkaError,), what=f"delivery of {len(batch)} facts", first_delay_s=self._retry_s,
                         logger=log)
        for item in batch:
            if item.refused is not None:
                await self._refused(item)

    async def _refused(self, item: _Outgoing) -> None:
        reason = f"Kafka refused it for good ({type(item.refused).__name__}): a message of {len(item.value):,} bytes"
        log.error("%s on %s: %s; it goes to the dead letters", reason, item.topic, item.key)
        if item.topic == self.topics.dead_letter:
            return  # a dead letter keeps at most 64 KiB of its message; one refused is not wrapped again
        job_id = item.key.decode(errors="replace") if item.key else None
        letter = dead_letter(item.value, DecodeError(reason, job_id=job_id), producer=self.producer_id,
                             topic=item.topic, key=item.key)
        await while_down(lambda: self.producer.send_and_wait(self.topics.dead_letter, letter.to_json(), key=item.key),
                         (KafkaError,), what="a dead letter", first_delay_s=self._retry_s, logger=log)


class JobLog:
    """The facts of one job, numbered 1, 2, 3, ... and stamped with who produced them."""

    def __init__(self, publisher: Publisher, *, job_id: str, kind: str, owner: str | None, last_seq: int = 0):
        self.publisher = publisher
        self.job_id = job_id
        self.kind = kind
        self.owner = owner
        self.last_seq = last_seq

    def make(self, cls: type[E], **fields: Any) -> E:
        self.last_seq += 1
        return cls(job_id=self.job_id, seq=self.last_seq, kind=self.kind, owner=self.owner,
                   producer=self.publisher.producer_id, **fields)

    async def emit(self, cls: type[E], *, wait: bool = False, **fields: Any) -> E:
        event = self.make(cls, **fields)
        await self.publisher.publish(event, wait=wait)
        return event
