"""Reads of the projection, always through the caller's owner: with auth on, another key's rows do not exist.

The gateway never writes these tables; the agents' projector does. Each function takes a session the caller opened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.live import FeedEvent
from infra.db.tables import Checkpoint, Dataset, Evaluation, Job, JobEventRow, Model

T = TypeVar("T")
Owner = str | None  # None: auth is off and every row is visible


def owned(statement: Select[Any], column: Any, owner: Owner) -> Select[Any]:
    return statement if owner is None else statement.where(column == owner)


def visible_to(owner: Owner) -> Callable[[str | None], bool]:
    """The same rule for live events as `owned` is for rows."""
    return (lambda _: True) if owner is None else (lambda event_owner: event_owner == owner)


# -- datasets ---------------------------------------------------------------------------------------------------------


async def get_dataset(session: AsyncSession, owner: Owner, dataset_id: str) -> Dataset | None:
    statement = owned(select(Dataset).where(Dataset.id == dataset_id), Dataset.owner, owner)
    return (await session.execute(statement)).scalar_one_or_none()


async def list_datasets(session: AsyncSession, owner: Owner, limit: int, offset: int) -> tuple[list[Dataset], int]:
    statement = owned(select(Dataset), Dataset.owner, owner)
    return await _page(session, statement.order_by(Dataset.created_at.desc(), Dataset.id), limit, offset)


# -- models -----------------------------------------------------------------------------------------------------------


async def get_model(session: AsyncSession, owner: Owner, model_id: str, deleted: bool = False) -> Model | None:
    statement = owned(select(Model).where(Model.id == model_id), Model.owner, owner)
    if not deleted:
        statement = statement.where(Model.status != "deleted")
    return (await session.execute(statement)).scalar_one_or_none()


async def model_named(session: AsyncSession, owner: Owner, name: str) -> Model | None:
    """The live (not deleted) model of that name; names are unique per owner among those."""
    statement = owned(select(Model).where(Model.name == name, Model.status != "deleted"), Model.owner, owner)
    statement = statement.order_by(Model.created_at.desc()).limit(1)
    return (await session.execute(statement)).scalar_one_or_none()


async def find_model(session: AsyncSession, owner: Owner, id_or_name: str) -> Model | None:
    return await get_model(session, owner, id_or_name) or await model_named(session, owner, id_or_name)


async def list_models(
    session: AsyncSession, owner: Owner, *, status: str | None = None, name: str | None = None,
    trained: bool = False, limit: int = 50, offset: int = 0,
) -> tuple[list[Model], int]:
    statement = owned(select(Model), Model.owner, owner)
    statement = statement.where(Model.status == status) if status else statement.where(Model.status != "deleted")
    if name:
        statement = statement.where(Model.name == name)
    if trained:
        statement = statement.where(Model.trained_at.is_not(None))
    return await _page(session, statement.order_by(Model.created_at.desc(), Model.id), limit, offset)


async def checkpoints(session: AsyncSession, model_id: str) -> list[Checkpoint]:
    statement = select(Checkpoint).where(Checkpoint.model_id == model_id).order_by(Checkpoint.step, Checkpoint.key)
    return list((await session.execute(statement)).scalars())


async def latest_evaluation(session: AsyncSession, model_id: str) -> Evaluation | None:
    statement = (
        select(Evaluation).where(Evaluation.model_id == model_id).order_by(Evaluation.created_at.desc()).limit(1)
    )
    return (await session.execute(statement)).scalar_one_or_none()


# -- jobs -------------------------------------------------------------------------------------------------------------


async def get_job(session: AsyncSession, owner: Owner, job_id: str) -> Job | None:
    statement = owned(select(Job).where(Job.id == job_id), Job.owner, owner)
    return (await session.execute(statement)).scalar_one_or_none()


async def list_jobs(
    session: AsyncSession, owner: Owner, *, kind: str | None = None, status: str | None = None,
    model_id: str | None = None, limit: int = 50, offset: int = 0,
) -> tuple[list[Job], int]:
    statement = owned(select(Job), Job.owner, owner)
    for column, value in ((Job.kind, kind), (Job.status, status), (Job.model_id, model_id)):
        if value:
            statement = statement.where(column == value)
    return await _page(session, statement.order_by(Job.created_at.desc(), Job.id), limit, offset)


async def log_visible(session: AsyncSession, owner: Owner, job_id: str) -> bool:
    """Whether the caller may read this job's log: a job row, or (uploads, deletions) a logged event of theirs."""
    if await get_job(session, owner, job_id) is not None:
        return True
    statement = owned(select(JobEventRow.position).where(JobEventRow.job_id == job_id), JobEventRow.owner, owner)
    return (await session.execute(statement.limit(1))).first() is not None


async def read_events(session: AsyncSession, job_id: str, after: int, before: int | None = None) -> list[FeedEvent]:
    statement = select(JobEventRow).where(JobEventRow.job_id == job_id, JobEventRow.seq > after)
    if before is not None:
        statement = statement.where(JobEventRow.seq < before)
    rows = (await session.execute(statement.order_by(JobEventRow.seq, JobEventRow.position))).scalars()
    return [FeedEvent.from_row(row.job_id, row.seq, row.type, row.owner, row.data) for row in rows]


# -- paging and waiting ----------------------------------------------------------------------------------------------


async def _page(session: AsyncSession, statement: Select[Any], limit: int, offset: int) -> tuple[list[Any], int]:
    total = (await session.execute(select(func.count()).select_from(statement.order_by(None).subquery()))).scalar()
    rows = list((await session.execute(statement.limit(limit).offset(offset))).scalars())
    return rows, int(total or 0)


async def wait_for(
    sessions: async_sessionmaker[AsyncSession],
    probe: Callable[[AsyncSession], Awaitable[T | None]],
    timeout_s: float,
    interval_s: float = 0.05,
) -> T | None:
    """Read-your-writes: poll until `probe` finds what the projector is about to write, or give up (None)."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with sessions() as session:
            found = await probe(session)
        if found is not None and found is not False:
            return found
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(interval_s)
