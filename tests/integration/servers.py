"""Servers of a test's own, which it may stop and start: the shared ones of `make services` must never stop.

They are started by the same scripts as `make services` (infra/services/up.sh and down.sh), with SERVICES_DIR set to
a folder of the test's and free loopback ports, so a private Kafka or PostgreSQL runs exactly as the shared one does.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from infra.db import migrate
from infra.process import free_port

SCRIPTS = Path(__file__).resolve().parents[2] / "infra" / "services"


class PrivateServers:
    """`up("kafka")`, `down("kafka")`, ...; `settings()` reads the LFZ_* values of those running; `purge()` at the end
    stops them all and deletes their data."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.env = {
            **os.environ,
            "SERVICES_DIR": str(directory),
            "SERVICES_KAFKA_PORT": str(free_port()),
            "SERVICES_KAFKA_CONTROLLER_PORT": str(free_port()),
            "SERVICES_PG_PORT": str(free_port()),
            "SERVICES_S3_PORT": str(free_port()),
            "SERVICES_PYTHON": sys.executable,
        }

    def up(self, *names: str) -> float:
        """Start the named servers and wait until they serve clients; returns the seconds that took."""
        return self._run("up.sh", *names)

    def down(self, *names: str) -> float:
        return self._run("down.sh", *names)

    def purge(self) -> None:
        self._run("down.sh", "--purge")

    def settings(self) -> dict[str, str]:
        """The LFZ_* variables that up.sh wrote for the servers running now."""
        values = {}
        for line in (self.directory / "services.env").read_text().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.partition("=")
                values[name] = value
        return values

    def _run(self, script: str, *args: str) -> float:
        started = time.monotonic()
        result = subprocess.run([str(SCRIPTS / script), *args], env=self.env, capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            raise AssertionError(f"{script} {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return time.monotonic() - started


def asyncpg_url(url: str) -> str:
    """The settings' SQLAlchemy URL (postgresql+asyncpg://...) as asyncpg itself takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(False)


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(asyncpg_url(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def scratch_database(server_url: str, name_prefix: str) -> Iterator[str]:
    """A migrated, empty database of its own on the shared PostgreSQL (dropped afterwards), for a test that must not
    see, or must not hold up, the others' rows. Yields its URL."""
    name = f"{name_prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(False)
    try:
        migrate(url, quiet=True)
        yield url
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
