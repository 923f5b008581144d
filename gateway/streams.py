"""A job's event stream: the database's log first, then live events, each sequence number exactly once, in order.

The subscription to the live feed is opened before the log is read, so nothing published in between is missed.
`SeqCursor` holds the rule: an event goes out only when its `seq` is one more than the last one sent. Events that
arrive ahead of a gap wait while the gap is read from the database (the projector may be a moment behind the feed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.live import Fanout, FeedEvent, Subscription, everyone
from infra.db import queries

log = logging.getLogger(__name__)

# Reads a job's recorded events with after < seq < before (before None: no upper bound), in seq order.
ReadEvents = Callable[[int, int | None], Awaitable[list[FeedEvent]]]


def log_reader(sessions: async_sessionmaker[AsyncSession], job_id: str) -> ReadEvents:
    """Reads of one job's log in the database, each in a short session of its own: streams outlive requests."""

    async def read(after: int, before: int | None) -> list[FeedEvent]:
        async with sessions() as session:
            return [FeedEvent.from_row(row) for row in await queries.read_log(session, job_id, after, before)]

    return read

GAP_RETRY_S = 0.1  # how often a gap is looked for in the database
FIRST_IDLE_POLL_S = 0.25  # an idle stream re-reads the log after this, then doubles the wait up to the keep-alive


class SeqCursor:
    """Dedupe and order by sequence number. `offer` returns the events that may go out now."""

    def __init__(self, last: int = 0, max_pending: int = 10_000):
        self.last = last
        self.pending: dict[int, FeedEvent] = {}
        self.max_pending = max_pending

    def offer(self, event: FeedEvent) -> list[FeedEvent]:
        if event.seq <= self.last or event.seq in self.pending:
            return []  # sent already, or waiting already: a duplicate
        self.pending[event.seq] = event
        if len(self.pending) > self.max_pending:
            return self.skip_gap()
        return self._drain()

    def _drain(self) -> list[FeedEvent]:
        ready: list[FeedEvent] = []
        while self.last + 1 in self.pending:
            event = self.pending.pop(self.last + 1)
            self.last = event.seq
            ready.append(event)
        return ready

    @property
    def gap(self) -> tuple[int, int] | None:
        """The missing sequence numbers `(first, last)`, when events wait behind them."""
        if not self.pending:
            return None
        return self.last + 1, min(self.pending) - 1

    def skip_gap(self) -> list[FeedEvent]:
        """Give up on the missing events and send what waits (the log lost them, or the projector is stuck)."""
        if not self.pending:
            return []
        log.warning("event stream: seq %d-%d never reached the database; skipping them", *self.gap)  # type: ignore[str-format]
        self.last = min(self.pending) - 1
        return self._drain()


async def job_events(
    job_id: str,
    after: int,
    feed: Fanout,
    read: ReadEvents,
    *,
    visible: Callable[[str | None], bool] = everyone,
    idle_poll_max_s: float = 15.0,
    gap_timeout_s: float = 10.0,
    subscription: Subscription | None = None,
    replay: bool = True,
) -> AsyncIterator[FeedEvent]:
    """Yield the job's events with seq > `after` until its terminal event. Raises SubscriptionLagged if dropped.

    Pass `subscription` when it had to be opened earlier (before publishing the command); the caller closes it.
    `replay=False` skips the first read of the log, for a job whose every event comes after that subscription (a
    request it publishes itself): the database is then read only for a gap, or when the stream falls idle."""
    async with AsyncExitStack() as stack:
        if subscription is None:
            subscription = await stack.enter_async_context(feed.subscribe(job_id, visible))
        cursor = SeqCursor(after)
        for event in await read(after, None) if replay else []:
            for replayed in cursor.offer(event):
                yield replayed
                if replayed.terminal:
                    return
        idle_poll = FIRST_IDLE_POLL_S
        next_read = time.monotonic() + idle_poll
        gap_since: float | None = None
        while True:
            live = await subscription.get(timeout=max(0.0, next_read - time.monotonic()))
            ready: list[FeedEvent] = []
            if live is not None:
                ready += cursor.offer(live)
                idle_poll = FIRST_IDLE_POLL_S
                if not cursor.gap:
                    next_read = time.monotonic() + idle_poll  # not idle: the database can wait
                elif gap_since is None:
                    next_read = time.monotonic()  # look for the missing ones at once
            now = time.monotonic()
            if now >= next_read:
                gap = cursor.gap
                before = gap[1] + 1 if gap else None
                found = 0
                for row in await read(cursor.last, before):
                    accepted = cursor.offer(row)
                    found += len(accepted)
                    ready += accepted
                if cursor.gap:
                    next_read = now + GAP_RETRY_S
                else:
                    idle_poll = FIRST_IDLE_POLL_S if found else min(idle_poll * 2, idle_poll_max_s)
                    next_read = now + idle_poll
            if cursor.gap:
                gap_since = gap_since or now
                if now - gap_since > gap_timeout_s:
                    ready += cursor.skip_gap()
                    gap_since = None
            else:
                gap_since = None
            for event in ready:
                yield event
                if event.terminal:
                    return


async def all_events(feed: Fanout, visible: Callable[[str | None], bool] = everyone) -> AsyncIterator[FeedEvent]:
    """Every new event the caller may see, live, until the subscriber is dropped (SubscriptionLagged)."""
    async with feed.subscribe(None, visible) as subscription:
        async for event in subscription:
            yield event
