"""The record agent: keeps the database up to date with the job-event log.

It applies facts in batches, one transaction each. When the database is down it waits and retries the same batch
until it succeeds, so nothing is lost; applying is idempotent, so a batch that is redelivered changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import faust
from faust.types import EventT

from agents.record.projection import apply_batch
from agents.runtime import Runtime
from events import DecodeError, dead_letter, decode_event
from infra.db import DATABASE_DOWN
from infra.joblog import Recorded
from infra.retry import while_down

log = logging.getLogger(__name__)


def register(app: faust.App, runtime: Runtime) -> None:
    topic = app.topic(runtime.topics.job_events, value_serializer="raw", key_serializer="raw")

    @app.agent(topic, name=f"{runtime.topics.prefix}record")
    async def record_job_events(stream: faust.StreamT) -> None:
        await runtime.ready.wait()
        async for events in stream.take_events(200, within=0.05):
            # `take_events` acks the events it handed out when the batch ends, however it ends: also when Faust
            # cancels the agent mid-write (a worker stopping, a rebalance), and the offsets of facts never recorded
            # would then be committed, losing them to the projection. One more reference on each message makes that
            # ack not the final one; this agent drops its reference once the batch is in the database. A batch
            # abandoned half-way is never committed, and is delivered again (applying is idempotent).
            for event in events:
                event.message.incref()
            batch = await _decode_batch(runtime, events)
            if batch:
                await apply_until_recorded(runtime, batch)
            for event in events:
                await stream.ack(event)


async def _decode_batch(runtime: Runtime, events: Sequence[EventT]) -> list[Recorded]:
    batch = []
    for event in events:
        message = event.message
        try:
            batch.append(Recorded(decode_event(event.value), message.partition, message.offset))
        except DecodeError as error:
            log.warning("undecodable job event at %s[%d]@%d: %s", message.topic, message.partition,
                        message.offset, error)
            await runtime.publisher.dead_letter(
                dead_letter(event.value, error, producer=runtime.publisher.producer_id, topic=message.topic,
                            partition=message.partition, offset=message.offset, key=message.key)
            )
    return batch


async def apply_until_recorded(runtime: Runtime, batch: list[Recorded]) -> int:
    try:
        return await while_down(lambda: _apply(runtime, batch), DATABASE_DOWN, what=f"recording {len(batch)} facts",
                                logger=log)
    except Exception:
        # One fact the projection cannot apply must not hold back the others: apply them one by one.
        log.exception("a batch of %d facts failed; applying them one at a time", len(batch))
        return await _apply_each(runtime, batch)


async def _apply(runtime: Runtime, batch: list[Recorded]) -> int:
    turned_away: list[tuple[Recorded, str]] = []
    async with runtime.sessions() as session:
        applied = await apply_batch(session, batch, turned_away)
        await session.commit()
    for recorded, reason in turned_away:
        log.warning("fact %s of job %s turned away: %s", recorded.event.event_id, recorded.event.job_id, reason)
        await runtime.publisher.dead_letter(
            dead_letter(recorded.event.to_json(), reason, producer=runtime.publisher.producer_id,
                        topic=runtime.topics.job_events, partition=recorded.partition, offset=recorded.offset,
                        key=recorded.event.job_id))
    return applied


async def _apply_each(runtime: Runtime, batch: list[Recorded]) -> int:
    applied = 0
    for recorded in batch:
        try:
            applied += await _apply(runtime, [recorded])
        except DATABASE_DOWN:
            applied += await apply_until_recorded(runtime, [recorded])
        except Exception as exc:
            log.exception("fact %s of job %s cannot be applied", recorded.event.event_id, recorded.event.job_id)
            await runtime.publisher.dead_letter(
                dead_letter(recorded.event.to_json(), f"the projection could not apply it: {exc}",
                            producer=runtime.publisher.producer_id, topic=runtime.topics.job_events,
                            partition=recorded.partition, offset=recorded.offset, key=recorded.event.job_id)
            )
    return applied
