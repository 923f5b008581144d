"""Fixtures for the gateway's tests on the embedded defaults, which need no server of `make services`: the embedded
broker (the real Kafka protocol), a migrated SQLite file, a local object store, the projection, scripted agents and
the app served over real HTTP. These fixtures override the real servers' `settings` of tests/integration/."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from infra.broker import EmbeddedBroker
from infra.db import migrate
from infra.settings import Settings
from tests.integration.gateway.embedded.harness import Projector, ScriptedAgents, serve


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as embedded:
        yield embedded.url


def make_settings(tmp_path: Path, broker: str, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        data_dir=tmp_path, kafka_url=broker, topic_prefix=f"t{uuid.uuid4().hex[:10]}.", topic_partitions=2,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'lfz.db'}", object_store_url=(tmp_path / "objects").as_uri(),
        submit_wait_s=3.0, sse_keepalive_s=0.5, request_timeout_s=5.0,
    )
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    # Alembic runs its own event loop: give it a thread, since async tests call this from theirs.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(migrate, settings.resolved_database_url, True).result()
    return settings


@pytest.fixture
def settings(tmp_path: Path, broker: str) -> Settings:
    return make_settings(tmp_path, broker)


@pytest.fixture
async def projector(settings: Settings) -> AsyncIterator[Projector]:
    async with Projector(settings) as running:
        yield running


@pytest.fixture
async def agents(settings: Settings) -> AsyncIterator[ScriptedAgents]:
    async with ScriptedAgents(settings) as running:
        yield running


@pytest.fixture
async def base_url(settings: Settings, projector: Projector) -> AsyncIterator[str]:
    async with serve(create_app(settings)) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as http:
        yield http
