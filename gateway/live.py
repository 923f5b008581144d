"""The live feed: one Kafka consumer per gateway process, fanning job events out to its subscribers.

The consumer belongs to no group: it is assigned every partition of the job-events topic and starts at the end, so
each gateway process sees every new fact. Each subscriber (one SSE stream, one waiting request) gets a bounded
queue. A subscriber that falls behind is dropped rather than allowed to hold up the others: its stream ends, and the
client resumes with Last-Event-ID from the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from events import TERMINAL_TYPES, DecodeError, JobEvent, Topics, decode_event
from gateway.sse import ServerSentEvent
from infra.db.tables import JobEventRow
from infra.kafka import client_options, partitions
from infra.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1000


@dataclass(frozen=True)
class FeedEvent:
    """One fact as the gateway relays it: decoded once, serialised once, shared by every subscriber."""

    job_id: str
    seq: int
    type: str
    owner: str | None
    data: str  # the event as JSON
    received_at: float = 0.0  # time.time() when it arrived from Kafka; 0 for rows read from the database
    _wire: dict[str | int, bytes] = field(default_factory=dict, compare=False, repr=False)

    def wire(self, id_: str | int) -> bytes:
        """The event as one server-sent message with this id, encoded once for all the streams that send it."""
        encoded = self._wire.get(id_)
        if encoded is None:
            encoded = self._wire[id_] = ServerSentEvent(data=self.data, event=self.type, id=id_).encode()
        return encoded

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def payload(self) -> dict[str, Any]:
        return json.loads(self.data)

    @classmethod
    def from_event(cls, event: JobEvent, received_at: float = 0.0) -> FeedEvent:
        return cls(event.job_id, event.seq, event.type, event.owner,  # type: ignore[attr-defined]
                   event.model_dump_json(), received_at)

    @classmethod
    def from_row(cls, row: JobEventRow) -> FeedEvent:
        return cls(row.job_id, row.seq, row.type, row.owner, json.dumps(row.data, separators=(",", ":")))


class SubscriptionLagged(Exception):
    """The subscriber did not keep up and was dropped; it should resume from the database."""


_LAGGED = object()


class Subscription:
    def __init__(self, job_id: str | None, owner_filter: Callable[[str | None], bool], size: int):
        self.job_id = job_id
        self.visible = owner_filter
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=size)
        self.lagged = False

    def offer(self, event: FeedEvent) -> bool:
        """Queue without waiting; False when the queue is full (the feed then drops this subscriber)."""
        if self.lagged or not self.visible(event.owner):
            return True
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            self.lagged = True
            while not self.queue.empty():  # make room for the marker; the stream will re-read from the database
                self.queue.get_nowait()
            self.queue.put_nowait(_LAGGED)
            return False

    async def get(self, timeout: float | None = None) -> FeedEvent | None:
        """The next event; None after `timeout` seconds without one. Raises SubscriptionLagged once dropped."""
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout) if timeout is not None else await self.queue.get()
        except TimeoutError:
            return None
        if item is _LAGGED:
            raise SubscriptionLagged(self.job_id or "all jobs")
        return item

    def __aiter__(self) -> AsyncIterator[FeedEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[FeedEvent]:
        while True:
            event = await self.get()
            if event is not None:
                yield event


def everyone(owner: str | None) -> bool:
    return True


class Fanout:
    """Subscribers keyed by job id, plus those who want every job. No Kafka here: `publish` is called per event."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE):
        self.queue_size = queue_size
        self._by_job: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self.dropped = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._all) + sum(len(subs) for subs in self._by_job.values())

    @asynccontextmanager
    async def subscribe(
        self, job_id: str | None = None, visible: Callable[[str | None], bool] = everyone
    ) -> AsyncIterator[Subscription]:
        """Events for one job (or every job when `job_id` is None) that `visible` lets through."""
        subscription = self.open(job_id, visible)
        try:
            yield subscription
        finally:
            self.close(subscription)

    def open(self, job_id: str | None = None, visible: Callable[[str | None], bool] = everyone) -> Subscription:
        """For a subscription that outlives a block (a stream handed to a response); pair with `close`."""
        subscription = Subscription(job_id, visible, self.queue_size)
        self._add(subscription)
        return subscription

    def close(self, subscription: Subscription) -> None:
        self._remove(subscription)

    def _add(self, subscription: Subscription) -> None:
        if subscription.job_id is None:
            self._all.add(subscription)
        else:
            self._by_job.setdefault(subscription.job_id, set()).add(subscription)

    def _remove(self, subscription: Subscription) -> None:
        if subscription.job_id is None:
            self._all.discard(subscription)
            return
        subscribers = self._by_job.get(subscription.job_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._by_job[subscription.job_id]

    def publish(self, event: FeedEvent) -> None:
        for subscription in (*self._by_job.get(event.job_id, ()), *self._all):
            if not subscription.offer(event):
                self.dropped += 1
                log.info("dropped a slow subscriber of %s", subscription.job_id or "all jobs")
                self._remove(subscription)


class LiveFeed(Fanout):
    """The fan-out fed by a Kafka consumer of the job-events topic."""

    def __init__(self, settings: Settings, client_id: str, queue_size: int = DEFAULT_QUEUE_SIZE):
        super().__init__(queue_size)
        self.settings = settings
        self.topic = Topics(settings.topic_prefix).job_events
        self.client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            client_id=self.client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=50,  # latency over batching: an SSE client is waiting on each event
            request_timeout_ms=30_000,
        )
        await consumer.start()
        try:
            assigned = [TopicPartition(self.topic, p) for p in await partitions(self.settings, self.topic)]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            for tp in assigned:  # resolve the end offsets now: a subscriber from here on misses nothing new
                await consumer.position(tp)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="gateway-live-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000, max_records=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the consumer reconnects by itself; keep the feed alive meanwhile
                log.warning("live feed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            now = time.time()
            for messages in batches.values():
                for message in messages:
                    self._relay(message.value, now)

    def _relay(self, raw: bytes | None, received_at: float) -> None:
        if raw is None:
            return
        try:
            event = decode_event(raw)
        except DecodeError as exc:  # the record agent dead-letters it; the feed only skips it
            log.debug("live feed: skipped an undecodable event: %s", exc.reason)
            return
        try:
            self.publish(FeedEvent.from_event(event, received_at))
        except Exception:  # a bug met by one fact must not end the feed for every client of this process
            log.exception("live feed: could not relay fact %s of job %s", event.seq, event.job_id)
