"""The collaborators every agent needs, built once per worker process and passed in: the settings, the database, the
object store and the publisher of facts. Agents wait for `ready` before they work."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from functools import partial

import mode

from events import Topics
from events.proof import Signer
from infra.db import create_engine, queries, sessionmaker
from infra.db.together import ReadTogether
from infra.kafka import create_producer, ensure_topics
from infra.objectstore import AsyncObjectStore, ObjectStore, open_object_store
from infra.publisher import Publisher
from infra.settings import Settings

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Runtime(mode.Service):
    def __init__(self, settings: Settings, **kwargs: object):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.settings = settings
        self.worker_id = settings.worker_id or default_worker_id()
        self.producer_name = f"agents/{self.worker_id}"
        self.topics = Topics(settings.topic_prefix)
        self.ready = asyncio.Event()
        self.engine = create_engine(settings.resolved_database_url)
        self.sessions = sessionmaker(self.engine)
        # Is a command's job id free: asked of every command, so the commands that arrive together ask it at once.
        self.ids_taken = ReadTogether(partial(queries.job_ids_taken, self.sessions))
        self.store: ObjectStore = open_object_store(settings)
        self.astore = AsyncObjectStore(self.store)
        self.publisher: Publisher  # made in on_start: a Kafka producer needs the running event loop
        self.signer = Signer(settings.api_keys)  # with keys configured, every command must prove its owner

    async def on_start(self) -> None:
        await ensure_topics(self.settings)
        await self.astore.ensure_bucket()
        # It signs the commands the agents send for an owner (a sweep's trials, their cancels) with that owner's key.
        self.publisher = Publisher(create_producer(self.settings, client_id=self.producer_name), self.topics,
                                   self.producer_name, signer=self.signer)
        await self.publisher.start()
        self.ready.set()
        log.info("worker %s ready", self.worker_id)

    async def on_stop(self) -> None:
        if self.ready.is_set():
            await self.publisher.stop()
        await self.engine.dispose()
