"""The collaborators every agent needs, built once per worker process and passed in."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import mode

from agents.projection import last_recorded
from agents.publisher import Publisher
from agents.queue import JobQueue
from events import Topics
from infra.db import DATABASE_DOWN, create_engine, sessionmaker
from infra.kafka import create_producer, ensure_topics
from infra.objectstore import AsyncObjectStore, ObjectStore, open_object_store
from infra.settings import Settings

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Runtime(mode.Service):
    """Database, object store, producer and job queue of one worker. Agents wait for `ready` before work."""

    def __init__(self, settings: Settings, **kwargs: object):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.settings = settings
        self.worker_id = settings.worker_id or default_worker_id()
        self.producer_name = f"agents/{self.worker_id}"
        self.topics = Topics(settings.topic_prefix)
        self.ready = asyncio.Event()
        self.engine = create_engine(settings.resolved_database_url)
        self.sessions = sessionmaker(self.engine)
        self.store: ObjectStore = open_object_store(settings)
        self.astore = AsyncObjectStore(self.store)
        self.publisher: Publisher  # made in on_start: a Kafka producer needs the running event loop
        self.queue = JobQueue(self.sessions, self.worker_id, settings.topic_prefix)

    async def on_start(self) -> None:
        await ensure_topics(self.settings)
        await self.astore.ensure_bucket()
        self.publisher = Publisher(create_producer(self.settings, client_id=self.producer_name), self.topics)
        await self.publisher.start()
        self.ready.set()
        log.info("worker %s ready", self.worker_id)

    async def hand_back_jobs(self, patience_s: float = 10.0) -> None:
        """Suspend the running jobs while the agents still run, and give the projector a moment to record the facts
        that suspending them published (their last checkpoints). The worker calls this before it stops its agents:
        with the embedded broker, which keeps nothing when it stops, a fact left unrecorded now would be gone."""
        scheduler = getattr(self, "scheduler", None)
        if scheduler is None or not self.ready.is_set():
            return
        handed_back = await scheduler.stop()
        # Not wait_for: a read held up by the database would hold the stop up as long, cancelled or not.
        waiting = asyncio.ensure_future(self._recorded(handed_back))
        done, _ = await asyncio.wait({waiting}, timeout=patience_s)
        if not done:  # the facts are on the topic: a projector records them once the database answers
            waiting.cancel()
            log.warning("stopping before the projection recorded the last facts of %s",
                        ", ".join(job_id for job_id, _ in handed_back))

    async def _recorded(self, jobs: list[tuple[str, int]]) -> None:
        for job_id, last_seq in jobs:
            while True:
                try:
                    async with self.sessions() as session:
                        if (await last_recorded(session, job_id))[0] >= last_seq:
                            break
                except DATABASE_DOWN:
                    pass
                await asyncio.sleep(0.1)

    async def on_stop(self) -> None:
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None:
            await scheduler.stop()  # running jobs checkpoint and go back to the queue for another worker
        if self.ready.is_set():
            await self.publisher.stop()
        await self.engine.dispose()
