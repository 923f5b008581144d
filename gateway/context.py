"""What every endpoint works with: the settings, database sessions, the object store, the publisher, the live feed.

Built once by the app's lifespan and handed to requests through `request.state.gateway`. Nothing here holds job
state: any number of gateway processes behind a load balancer behave as one.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import Request

from events import Topics
from gateway.errors import ApiError
from gateway.live import Fanout
from gateway.metrics import GatewayMetrics
from infra.objectstore import AsyncObjectStore
from infra.publisher import Publisher
from infra.settings import Settings


def process_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class StreamLimiter:
    """Open event streams per API key (per process): the one past the limit gets 429."""

    def __init__(self, limit: int, metrics: GatewayMetrics | None = None):
        self.limit = limit
        self.metrics = metrics
        self.open: Counter[str | None] = Counter()

    def acquire(self, owner: str | None) -> None:
        if self.open[owner] >= self.limit:
            raise ApiError(429, "too_many_streams",
                           f"this key has {self.open[owner]} event streams open; the limit is {self.limit}",
                           headers={"Retry-After": "1"})
        self.open[owner] += 1
        if self.metrics is not None:
            self.metrics.streams.inc()

    def release(self, owner: str | None) -> None:
        self.open[owner] -= 1
        if self.open[owner] <= 0:
            del self.open[owner]
        if self.metrics is not None:
            self.metrics.streams.dec()


@dataclass
class Gateway:
    settings: Settings
    topics: Topics
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: AsyncObjectStore
    publisher: Publisher
    feed: Fanout
    streams: StreamLimiter
    metrics: GatewayMetrics

    @property
    def producer_id(self) -> str:
        return self.publisher.producer_id


def gateway_of(request: Request) -> Gateway:
    return request.state.gateway


def owner_of(request: Request) -> str | None:
    """The caller's tenant id, or None when auth is off (then everything is visible)."""
    return getattr(request.state, "owner", None)
