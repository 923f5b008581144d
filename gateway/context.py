"""What every endpoint works with: the settings, database sessions, the object store, the publisher, the live feed.

Built once by the app's lifespan and handed to requests through `request.state.gateway`. Nothing here holds job
state: any number of gateway processes behind a load balancer behave as one.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import Request

from events import Topics
from gateway.live import Fanout
from gateway.metrics import GatewayMetrics
from gateway.quotas import PerKeyLimit
from infra.db.tables import Model
from infra.db.together import ReadTogether
from infra.objectstore import AsyncObjectStore
from infra.publisher import Publisher
from infra.settings import Settings


def process_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class Gateway:
    settings: Settings
    topics: Topics
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: AsyncObjectStore
    publisher: Publisher
    feed: Fanout
    streams: PerKeyLimit  # open event streams
    generations: PerKeyLimit  # generations in flight, and evaluations waited for
    metrics: GatewayMetrics
    models: ReadTogether[tuple[str | None, str], Model | None]  # (owner, id or name) -> the model it names

    @property
    def producer_id(self) -> str:
        return self.publisher.producer_id


def gateway_of(request: Request) -> Gateway:
    return request.state.gateway


def owner_of(request: Request) -> str | None:
    """The caller's tenant id, or None when auth is off (then everything is visible)."""
    return getattr(request.state, "owner", None)
