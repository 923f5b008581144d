"""Shared fixtures for the tests against the real Kafka, PostgreSQL and S3 server of `make services`.

The settings come from the environment that `.lfz/services.env` sets (the Makefile's `test` target sources it).
These tests never skip: without that environment, or with a server down, they fail and say what to run.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from infra.objectstore import ObjectStore, open_object_store
from infra.settings import Settings, load_settings

HOW_TO = "run `make services` and source .lfz/services.env (set -a; . .lfz/services.env; set +a)"
REQUIRED = ("LFZ_KAFKA_URL", "LFZ_DATABASE_URL", "LFZ_OBJECT_STORE_URL", "LFZ_S3_ACCESS_KEY", "LFZ_S3_SECRET_KEY")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.integration)


def _require_env(*names: str) -> None:
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: {HOW_TO}", pytrace=False)


def _require_reachable(what: str, url: str, default_port: int) -> None:
    parsed = urlparse(url)
    address = (parsed.hostname or "127.0.0.1", parsed.port or default_port)
    try:
        socket.create_connection(address, timeout=3).close()
    except OSError as exc:
        pytest.fail(f"{what} at {address[0]}:{address[1]} does not answer ({exc}): {HOW_TO}", pytrace=False)


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings pointing at the servers of `make services`, checked to answer before any test uses them."""
    _require_env(*REQUIRED)
    settings = load_settings()
    _require_reachable("Kafka", "kafka://" + settings.kafka_bootstrap.split(",")[0], 9092)
    _require_reachable("PostgreSQL", settings.database_url, 5432)
    scheme = urlparse(settings.object_store_url).scheme
    if scheme in ("http", "https"):
        _require_reachable("the S3 server", settings.object_store_url, 443 if scheme == "https" else 80)
    return settings


@pytest.fixture(scope="session")
def kafka_bootstrap(settings: Settings) -> str:
    """`host:port` of the real Kafka, for aiokafka clients."""
    return settings.kafka_bootstrap


@pytest.fixture(scope="session")
def test_database_url() -> str:
    """A PostgreSQL database (`lfz_test`) that tests may fill and empty as they like."""
    _require_env("LFZ_TEST_DATABASE_URL")
    return os.environ["LFZ_TEST_DATABASE_URL"]


@pytest.fixture
def unique() -> str:
    """A short name part unique to this test run: topics, groups and keys never meet another run's."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def isolated_settings(settings: Settings, unique: str) -> Settings:
    """The real servers, with a topic prefix of this test's own."""
    return settings.model_copy(update={"topic_prefix": f"lfz.test.{unique}."})


@pytest.fixture
def object_store(settings: Settings) -> ObjectStore:
    store = open_object_store(settings)
    store.ensure_bucket()
    return store


@pytest.fixture
def object_prefix(object_store: ObjectStore, unique: str) -> Iterator[str]:
    """A key prefix of this test's own in the real bucket, emptied afterwards."""
    prefix = f"tests/{unique}/"
    yield prefix
    object_store.delete_prefix(prefix)
