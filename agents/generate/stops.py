"""Stopping a generation whose client has gone: every worker watches the control topic for a CancelRequested that
names one of the generations it is running.

A generation is not a queued job (it runs in the worker that got its request, for a second or two), so the cancel
cannot go through the job queue as a training's does; and the control topic's partitions belong to whichever worker
the consumer group gave them to. So each worker reads the whole topic from its end with a consumer of its own (no
group, like the gateway's live feed) and sets the stop flag of a generation it runs. The owner is checked as the
control agent checks it (the proof's signer, with API keys); the generation then ends with JobCancelled.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from aiokafka import AIOKafkaConsumer, TopicPartition

from events import CancelRequested, DecodeError, decode_command
from events.proof import Signer
from infra.kafka import client_options, partitions, stop_consumer
from infra.settings import Settings

log = logging.getLogger(__name__)


class Stops:
    def __init__(self, settings: Settings, topic: str, signer: Signer, client_id: str):
        self.settings = settings
        self.topic = topic
        self.signer = signer
        self.client_id = client_id
        self._running: dict[str, tuple[str | None, threading.Event]] = {}

    def watch(self, request_id: str, owner: str | None) -> threading.Event:
        """The flag that a cancel of this generation sets; pair with `forget`."""
        flag = threading.Event()
        self._running[request_id] = (owner, flag)
        return flag

    def forget(self, request_id: str) -> None:
        self._running.pop(request_id, None)

    def stop_named(self, raw: bytes, headers: object) -> str | None:
        """Set the flag of the generation this control record cancels, if it is one of ours and its sender may."""
        try:
            signer = self.signer.signer_of(headers, raw) if self.signer.enabled else None
            command = decode_command(raw, (CancelRequested,))
            sender = self.signer.owner(signer, command.owner)  # type: ignore[attr-defined]
        except DecodeError:
            return None  # the control agent dead-letters it
        running = self._running.get(command.job_id)  # type: ignore[attr-defined]
        if running is None:
            return None
        owner, flag = running
        if sender is not None and sender != owner:
            return None
        flag.set()
        return command.job_id  # type: ignore[attr-defined]

    async def run(self) -> None:
        """Watch the control topic from its end, for as long as the worker runs (restarting after a failure)."""
        while True:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("generation stops: the watch of the control topic failed; starting it again")
                await asyncio.sleep(1.0)

    async def _watch(self) -> None:
        consumer = AIOKafkaConsumer(**client_options(self.settings), client_id=self.client_id,
                                    group_id=None, enable_auto_commit=False, auto_offset_reset="latest",
                                    fetch_max_wait_ms=self.settings.fetch_wait_ms)
        try:
            await consumer.start()
            assigned = [TopicPartition(self.topic, p) for p in await partitions(self.settings, self.topic)]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            while True:
                try:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=200)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the consumer reconnects by itself
                    log.warning("generation stops: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                for records in batches.values():
                    for record in records:
                        if record.value is not None and self._running:
                            stopped = self.stop_named(record.value, record.headers)
                            if stopped is not None:
                                log.info("generation %s: stopping, its cancel came", stopped)
        finally:
            await stop_consumer(consumer)
