"""Schemathesis over /openapi.json, with and without auth: no request it generates gets a 5xx.

These gateways use topics and a database of their own with no agent behind them (so generated commands train
nothing and no model is ever trained), and short waits, so that a request that would wait answers quickly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from infra.db.__main__ import migrate
from infra.settings import Settings
from tests.integration.gateway.conftest import KEYS, Process, _start_gateway


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def own_database(settings: Settings) -> Iterator[str]:
    """An empty projection of this module's own (created, migrated, dropped): nobody else's models to find."""
    name = f"lfz_gwfuzz_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(settings.database_url, f'CREATE DATABASE "{name}"'))
    url = make_url(settings.database_url).set(database=name).render_as_string(False)
    try:
        migrate(url, quiet=True)
        yield url
    finally:
        asyncio.run(_admin(settings.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def fuzz_gateways(stack_env: dict[str, str], log_dir: Path, own_database: str) -> Iterator[dict[str, str]]:
    env = {**stack_env, "LFZ_TOPIC_PREFIX": stack_env["LFZ_TOPIC_PREFIX"] + "fuzz.", "LFZ_SUBMIT_WAIT_S": "0.2",
           "LFZ_REQUEST_TIMEOUT_S": "1", "LFZ_SSE_KEEPALIVE_S": "0.5", "LFZ_DATABASE_URL": own_database}
    started: list[Process] = []
    urls = {}
    try:
        for name, extra in (("fuzz-open", {}), ("fuzz-auth", {"LFZ_API_KEYS": ",".join(KEYS)})):
            process, urls[name] = _start_gateway(name, env, log_dir, **extra)
            started.append(process)
        yield urls
    finally:
        for process in started:
            process.stop()


@pytest.mark.parametrize("which, headers", [("fuzz-open", []), ("fuzz-auth", ["-H", f"Authorization: Bearer {KEYS[0]}"])])
def test_no_server_errors(fuzz_gateways: dict[str, str], which: str, headers: list[str], tmp_path: Path):
    url = fuzz_gateways[which]
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
        "--max-examples", "25", "--request-timeout", "10", "--exclude-path-regex", "^/api/v1/events$",
        "--generation-deterministic", *headers,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=540, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
