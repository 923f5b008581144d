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

from infra.settings import Settings
from tests.integration.pipeline.conftest import train_request
from tests.integration.servers import asyncpg_url, scratch_database
from tests.integration.stack import distinct, poll, recorded, start_worker, wait_until

PROJECTOR_WAITS = ("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                   "WHERE d.datname = current_database() AND l.relation = 'job_events'::regclass "
                   "AND NOT l.granted AND l.mode = 'RowExclusiveLock'")


@pytest.fixture
def own_database(settings: Settings) -> Iterator[str]:
    with scratch_database(settings.database_url, "lfz_record") as url:
        yield url


async def test_a_worker_stopped_in_the_middle_of_recording_a_batch_loses_no_fact(own_env, own_bus, own_database,
                                                                                  settings, tmp_path: Path):
    """Regression: Faust acked the batch the projector was writing when its worker stopped, so the batch's offsets
    were committed and its facts never reached the database."""
    env = {**own_env, "LFZ_DATABASE_URL": own_database}
    job_id = f"midbatch-{uuid.uuid4().hex[:8]}"
    first = start_worker("midbatch-1", env, tmp_path)
    connection = await asyncpg.connect(asyncpg_url(own_database))
    try:
        request = {**train_request(job_id, "midbatch"), "hyperparameters": {"preset": "tiny", "max_iters": 600}}
        await own_bus.produce("train.requested", request, key=job_id)
        # The run has started (it read the job's log from the table before training) and reports progress.
        await asyncio.wait_for(poll(lambda: recorded(own_database, job_id),
                                    lambda rows: any(row[2] == "TrainProgress" for row in rows)), 120)
        transaction = connection.transaction()
        await transaction.start()
        # EXCLUSIVE holds writers back and lets readers through: what the projector reads before it writes, and
        # what the stopping worker reads to see whether its last facts were recorded, are answered.
        await connection.execute("LOCK TABLE job_events IN EXCLUSIVE MODE")
        # The projector's insert of its next batch waits for the table: it is in the middle of recording it.
        await asyncio.wait_for(poll(lambda: connection.fetchval(PROJECTOR_WAITS), lambda n: n > 0), 90)
        # The worker hands its job back (its projector cannot record that while the table is locked, and gives up
        # waiting after a few seconds), then stops its agents: the projector is cancelled mid-batch.
        os.killpg(first.pid, signal.SIGTERM)
        wait_until(lambda: "record_job_events]: Stopping" in first.tail(200_000), 45, "the projector to stop")
        await transaction.rollback()
        first.popen.wait(60)
    finally:
        first.stop()
        await connection.close()
    second = start_worker("midbatch-2", env, tmp_path)
    try:
        events = distinct(await own_bus.job(job_id, timeout=180))
        assert events[-1]["type"] == "TrainCompleted"
        in_db = await asyncio.wait_for(poll(lambda: recorded(own_database, job_id),
                                            lambda rows: len(rows) >= len(events)), 60)
        assert sorted(row[0] for row in in_db) == sorted(e["event_id"] for e in events)
    finally:
        second.stop()
