"""The projector loses nothing when its worker stops in the middle of recording a batch.

These tests lock the job_events table, so they run on a database of their own: other tests (and other sessions'
workers) sharing the server's `lfz` database are not held up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from infra.db.__main__ import migrate
from infra.settings import Settings
from tests.integration.pipeline.conftest import train_request
from tests.integration.pipeline.test_faults import _distinct, _poll, _recorded
from tests.integration.stack import start_worker, wait_until

PROJECTOR_WAITS = ("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                   "WHERE d.datname = current_database() AND l.relation = 'job_events'::regclass "
                   "AND NOT l.granted AND l.mode = 'RowExclusiveLock'")


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(_plain(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def own_database(settings: Settings) -> Iterator[str]:
    name = f"lfz_record_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(settings.database_url, f'CREATE DATABASE "{name}"'))
    url = make_url(settings.database_url).set(database=name).render_as_string(False)
    try:
        migrate(url, quiet=True)
        yield url
    finally:
        asyncio.run(_admin(settings.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_a_worker_stopped_in_the_middle_of_recording_a_batch_loses_no_fact(own_env, own_bus, own_database,
                                                                                  settings, tmp_path: Path):
    """Regression: Faust acked the batch the projector was writing when its worker stopped, so the batch's offsets
    were committed and its facts never reached the database."""
    env = {**own_env, "LFZ_DATABASE_URL": own_database}
    job_id = f"midbatch-{uuid.uuid4().hex[:8]}"
    first = start_worker("midbatch-1", env, tmp_path)
    connection = await asyncpg.connect(_plain(own_database))
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("LOCK TABLE job_events IN ACCESS EXCLUSIVE MODE")
        await own_bus.produce("train.requested", train_request(job_id, "midbatch"), key=job_id)
        # The projector's insert of its first batch waits for the table: it is in the middle of recording it.
        await asyncio.wait_for(_poll(lambda: connection.fetchval(PROJECTOR_WAITS), lambda n: n > 0), 90)
        os.killpg(first.pid, signal.SIGTERM)
        wait_until(lambda: "record_job_events]: Stopping" in first.tail(200_000), 30, "the projector to stop")
        await transaction.rollback()
        first.popen.wait(60)
    finally:
        first.stop()
        await connection.close()
    second = start_worker("midbatch-2", env, tmp_path)
    try:
        events = _distinct(await own_bus.job(job_id, timeout=180))
        assert events[-1]["type"] == "TrainCompleted"
        database = settings.model_copy(update={"database_url": own_database})
        recorded = await asyncio.wait_for(_poll(lambda: _recorded(database, job_id),
                                                lambda rows: len(rows) >= len(events)), 60)
        assert sorted(row[0] for row in recorded) == sorted(e["event_id"] for e in events)
    finally:
        second.stop()
