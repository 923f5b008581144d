"""The database engine against the real PostgreSQL: a server that goes away reads as DATABASE_DOWN; the reads that
requests arriving together share."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import delete, text
from sqlalchemy.exc import OperationalError

from events import Rejected
from infra.db import DATABASE_DOWN, create_engine, queries, sessionmaker
from infra.db.tables import Dataset, Job, Model
from infra.settings import Settings
from tests.integration.servers import asyncpg_url


async def test_a_query_cut_off_by_the_server_shutting_down_reads_as_the_database_going_away(settings: Settings):
    """Regression: asyncpg's "terminating connection due to administrator command" (what every session gets when
    PostgreSQL stops) reached the code as a plain DBAPIError, not one of DATABASE_DOWN, so the projector took a
    database restart for facts it could not apply and dead-lettered them, and the gateway answered 500."""
    engine = create_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar()
            # What a fast shutdown does to each session, done to this one alone: the shared server stays up.
            terminate = asyncio.create_task(_terminate_when_busy(settings, pid))
            with pytest.raises(DATABASE_DOWN) as caught:
                await connection.execute(text("SELECT pg_sleep(30)"))
            assert await terminate
        assert isinstance(caught.value, OperationalError) and caught.value.connection_invalidated
        async with engine.connect() as connection:  # the pool hands out a fresh connection afterwards
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def _terminate_when_busy(settings: Settings, pid: int) -> bool:
    admin = await asyncpg.connect(asyncpg_url(settings.resolved_database_url))
    try:
        while await admin.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid) != "active":
            await asyncio.sleep(0.05)
        return await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_a_statement_cancelled_with_its_task_stays_a_cancellation(settings: Settings):
    """Regression: SQLAlchemy counts a cancellation mid-statement as a disconnect, and the hook that turns
    disconnects into DATABASE_DOWN turned it into an OperationalError too; the projector's retry loop then swallowed
    the cancellation of a stopping worker and never stopped."""
    engine = create_engine(settings.resolved_database_url)
    try:
        async def sleep_in_the_database() -> None:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT pg_sleep(30)"))

        task = asyncio.create_task(sleep_in_the_database())
        await asyncio.sleep(1.0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=20)
        assert done, "the cancelled statement did not end"
        assert task.cancelled(), f"the task ended with {task.exception()!r} instead of being cancelled"
    finally:
        await engine.dispose()


async def test_the_reads_that_requests_share_answer_each_request_as_its_own_read_would(settings: Settings,
                                                                                     unique: str):
    """`job_ids_taken` and `servable_models` against the real PostgreSQL: many keys in one call, each answered as
    `job_id_taken` and `servable_model` would answer it alone, another owner's rows invisible."""
    engine = create_engine(settings.resolved_database_url)
    sessions = sessionmaker(engine)
    now = datetime.now(UTC)
    dataset, job, free = f"{unique}-dataset", f"{unique}-job", f"{unique}-free"
    name = f"{unique}-model"
    try:
        async with sessions() as session:
            session.add(Dataset(id=dataset, owner="ann", name="d", key="k", bytes=1, preview="", created_at=now))
            session.add(Job(id=job, owner="ann", kind="generate", status="completed", created_at=now, updated_at=now))
            for version, checkpoint in ((1, f"{unique}/1/best.pt"), (2, f"{unique}/2/best.pt"), (3, None)):
                session.add(Model(id=f"{unique}-{version}", owner="ann", name=name, version=version, status="completed",
                                  best_checkpoint=checkpoint, created_at=now, updated_at=now))
            await session.commit()
        taken = await queries.job_ids_taken(sessions, [
            (dataset, "generate", "ann"), (job, "generate", "ann"), (job, "train", "ann"), (job, "generate", "bob"),
            (free, "generate", "ann")])
        assert taken == {(dataset, "generate", "ann"): True, (job, "generate", "ann"): False,
                         (job, "train", "ann"): True, (job, "generate", "bob"): True, (free, "generate", "ann"): False}
        refs = [("ann", None, name), ("ann", f"{unique}-1", None), ("bob", None, name), ("ann", f"{unique}-3", None)]
        models = await queries.servable_models(sessions, refs)
        assert models[refs[0]].id == f"{unique}-2"  # the newest version with a checkpoint
        assert models[refs[1]].id == f"{unique}-1"
        assert isinstance(models[refs[2]], Rejected) and models[refs[2]].field == "model_name"
        assert isinstance(models[refs[3]], Rejected) and "no checkpoint yet" in models[refs[3]].reason
    finally:
        async with sessions() as session:
            await session.execute(delete(Model).where(Model.name == name))
            await session.execute(delete(Job).where(Job.id == job))
            await session.execute(delete(Dataset).where(Dataset.id == dataset))
            await session.commit()
        await engine.dispose()
