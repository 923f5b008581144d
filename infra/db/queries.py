"""Reads of the projection, for the gateway and the agents alike, always through one owner rule (`owned`).

The owner is the tenant a request comes from: the API key's over HTTP, the command's `owner` on Kafka. With an owner,
another owner's rows do not exist; without one (auth off: one user) every row is visible. Only the agents' record
agent writes these tables. Each function takes a session the caller opened, except the ones that wait, which open
a short session per try.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from events import QUEUED_KINDS, Rejected
from infra.db.tables import (Checkpoint, Dataset, Evaluation, Job, JobEventRow, JobQueueRow, Model, ModelAlias,
                             Tokenization)

T = TypeVar("T")
Owner = str | None  # None: auth is off and every row is visible
TakenKey = tuple[str, "str | None", Owner]  # (job id, the kind of job asking for it, its owner)
ModelRef = tuple[Owner, "str | None", "str | None"]  # (owner, model id, model name) of a command
MOST_VERSION = 2**31 - 1  # the largest version number (an INTEGER column)


def owned(statement: Select[Any], column: Any, owner: Owner) -> Select[Any]:
    return statement if owner is None else statement.where(column == owner)


def belongs_to(column: Any, owner: Owner) -> Any:
    """Rows of exactly this owner (the rows of no owner, for None): what a fact may change, unlike `owned`, which
    lets no owner (no keys configured) see every row."""
    return column.is_(None) if owner is None else column == owner


def visible_to(owner: Owner) -> Callable[[str | None], bool]:
    """The same rule for a fact (by its owner) as `owned` is for rows."""
    return (lambda _: True) if owner is None else (lambda fact_owner: fact_owner == owner)


# -- job ids ----------------------------------------------------------------------------------------------------------


async def job_ids_taken(sessions: async_sessionmaker[AsyncSession], keys: list[TakenKey]) -> dict[TakenKey, bool]:
    """Of each (job id, kind, owner): whether the id already names a dataset, or a job of another kind or another
    owner. Job ids are chosen by whoever produces a request, and datasets share their namespace (an upload's id is
    its log's job id). Two statements for any number of ids."""
    ids = {job_id for job_id, _, _ in keys}
    async with sessions() as session:
        datasets = set((await session.execute(select(Dataset.id).where(Dataset.id.in_(ids)))).scalars())
        jobs = {row.id: (row.kind, row.owner)
                for row in await session.execute(select(Job.id, Job.kind, Job.owner).where(Job.id.in_(ids)))}
    return {(job_id, kind, owner): job_id in datasets or jobs.get(job_id, (kind, owner)) != (kind, owner)
            for job_id, kind, owner in keys}


# -- datasets ---------------------------------------------------------------------------------------------------------


async def get_dataset(session: AsyncSession, owner: Owner, dataset_id: str) -> Dataset | None:
    statement = owned(select(Dataset).where(Dataset.id == dataset_id), Dataset.owner, owner)
    return (await session.execute(statement)).scalar_one_or_none()


async def list_datasets(session: AsyncSession, owner: Owner, limit: int, offset: int) -> tuple[list[Dataset], int]:
    statement = owned(select(Dataset), Dataset.owner, owner)
    return await _page(session, statement.order_by(Dataset.created_at.desc(), Dataset.id), limit, offset)


async def dataset_with_digest(session: AsyncSession, owner: Owner, sha256: str) -> Dataset | None:
    """The owner's upload of exactly these bytes, if there is one (the oldest)."""
    statement = owned(select(Dataset).where(Dataset.sha256 == sha256), Dataset.owner, owner)
    if owner is None:
        statement = statement.where(Dataset.owner.is_(None))  # one user's uploads are not another tenant's
    return (await session.execute(statement.order_by(Dataset.created_at).limit(1))).scalar_one_or_none()


async def tokenizations_of(session: AsyncSession, dataset_id: str) -> list[Tokenization]:
    statement = select(Tokenization).where(Tokenization.dataset_id == dataset_id)
    return list((await session.execute(statement.order_by(Tokenization.updated_at.desc()))).scalars())


async def finished_tokenizations(session: AsyncSession, dataset_id: str, tokenizer: str) -> list[Tokenization]:
    """A dataset's completed tokenizations by this kind of tokenizer, newest first."""
    statement = select(Tokenization).where(Tokenization.dataset_id == dataset_id, Tokenization.status == "completed",
                                           Tokenization.tokenizer == tokenizer)
    return list((await session.execute(statement.order_by(Tokenization.updated_at.desc()))).scalars())


async def dataset_by_key(session: AsyncSession, owner: Owner, key: str) -> Dataset | None:
    statement = owned(select(Dataset).where(Dataset.key == key), Dataset.owner, owner)
    return (await session.execute(statement.limit(1))).scalar_one_or_none()


async def dataset_readable(session: AsyncSession, owner: Owner, key: str) -> bool:
    """Whether the owner may read the stored text at `key`: one of its datasets (an upload, or an inline training
    text, which the train agent records as a dataset too). Decided by the dataset rows alone: a key is easy to write
    down, and a model row can name any key a refused request named."""
    if owner is None:
        return True
    upload = owned(select(Dataset.id).where(Dataset.key == key), Dataset.owner, owner)
    return await session.scalar(upload.limit(1)) is not None


# -- models -----------------------------------------------------------------------------------------------------------


async def get_model(session: AsyncSession, owner: Owner, model_id: str, deleted: bool = False) -> Model | None:
    statement = owned(select(Model).where(Model.id == model_id), Model.owner, owner)
    if not deleted:
        statement = statement.where(Model.status != "deleted")
    return (await session.execute(statement)).scalar_one_or_none()


async def model_named(session: AsyncSession, owner: Owner, name: str, version: int | None = None,
                      servable: bool = False) -> Model | None:
    """A live (not deleted) version of the name: the one numbered `version`, else the newest (with `servable`, the
    newest that has a checkpoint, when one has: a new version in training does not take its name's place yet)."""
    if version is not None and not 1 <= version <= MOST_VERSION:  # no such version; nor a number the column holds
        return None
    statement = owned(select(Model).where(Model.name == name, Model.status != "deleted"), Model.owner, owner)
    if version is not None:
        statement = statement.where(Model.version == version)
    elif servable:
        with_checkpoint = statement.where(Model.latest_checkpoint.is_not(None) | Model.best_checkpoint.is_not(None))
        found = (await session.execute(with_checkpoint.order_by(Model.version.desc(), Model.created_at.desc())
                                       .limit(1))).scalar_one_or_none()
        if found is not None:
            return found
    statement = statement.order_by(Model.version.desc(), Model.created_at.desc()).limit(1)
    return (await session.execute(statement)).scalar_one_or_none()


async def model_aliased(session: AsyncSession, owner: Owner, name: str, alias: str) -> Model | None:
    statement = owned(select(ModelAlias.model_id).where(ModelAlias.name == name, ModelAlias.alias == alias),
                      ModelAlias.owner, owner)
    model_id = await session.scalar(statement.order_by(ModelAlias.updated_at.desc()).limit(1))
    return await get_model(session, owner, model_id) if model_id else None


async def find_model(session: AsyncSession, owner: Owner, ref: str, servable: bool = False) -> Model | None:
    """What a person may write to name a model: a version's id, a name (its newest version; see `model_named` for
    `servable`), `name@alias` or `name/version`. A whole name wins over reading it as an alias or a version (older
    names may hold `@` or `/`)."""
    found = await get_model(session, owner, ref) or await model_named(session, owner, ref, servable=servable)
    if found is not None:
        return found
    if "@" in ref:
        name, alias = ref.rsplit("@", 1)
        return await model_aliased(session, owner, name, alias)
    name, _, version = ref.rpartition("/")
    if name and version.isdigit():
        return await model_named(session, owner, name, int(version))
    return None


async def versions(session: AsyncSession, owner: Owner, name: str) -> list[Model]:
    """The live versions of a name, oldest first."""
    statement = owned(select(Model).where(Model.name == name, Model.status != "deleted"), Model.owner, owner)
    return list((await session.execute(statement.order_by(Model.version, Model.created_at))).scalars())


async def aliases_of(session: AsyncSession, model_ids: list[str]) -> dict[str, list[str]]:
    """Each version's aliases, by model id."""
    found: dict[str, list[str]] = {}
    if model_ids:
        statement = select(ModelAlias.model_id, ModelAlias.alias).where(ModelAlias.model_id.in_(model_ids))
        for model_id, alias in (await session.execute(statement.order_by(ModelAlias.alias))).all():
            found.setdefault(model_id, []).append(alias)
    return found


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


async def servable_model(session: AsyncSession, owner: Owner, model_id: str | None, model_name: str | None) -> Model:
    """The model a command names, by id or else by name, with a checkpoint to serve from (trained, or stopped after a
    checkpoint: cancelled, failed, still training); Rejected naming the field when it is missing, another owner's,
    or has no checkpoint yet."""
    field = "model_id" if model_id is not None else "model_name"
    label = f"model {model_id}" if model_id is not None else f"model named {model_name!r}"
    if model_id is not None:
        model = await get_model(session, owner, model_id)
    else:
        model = await find_model(session, owner, model_name or "", servable=True)
    if model is None:
        raise Rejected(f"{field}: there is no {label}", field)
    if not (model.best_checkpoint or model.latest_checkpoint):
        raise Rejected(f"{field}: {label} has no checkpoint yet (status {model.status})", field)
    return model


async def servable_models(sessions: async_sessionmaker[AsyncSession],
                          refs: list[ModelRef]) -> dict[ModelRef, Model | Rejected]:
    """`servable_model` of each (owner, model id, model name), in one session: what the requests that arrive
    together share (infra/db/together.py)."""
    answers: dict[ModelRef, Model | Rejected] = {}
    async with sessions() as session:
        for ref in refs:
            try:
                answers[ref] = await servable_model(session, *ref)
            except Rejected as error:
                answers[ref] = error
    return answers


async def found_models(sessions: async_sessionmaker[AsyncSession],
                       refs: list[tuple[Owner, str]]) -> dict[tuple[Owner, str], Model | None]:
    """`find_model(..., servable=True)` of each (owner, what a person wrote to name a model), in one session: what
    the requests that arrive together share (infra/db/together.py)."""
    async with sessions() as session:
        return {ref: await find_model(session, *ref, servable=True) for ref in refs}


async def servable_model_soon(sessions: async_sessionmaker[AsyncSession], owner: Owner, model_id: str | None,
                              model_name: str | None, patience_s: float = 3.0) -> Model:
    """`servable_model`, tried again for a few seconds: a model that finished training a moment ago may not be
    recorded yet (the record agent runs a little behind the log), so a miss is only final after a short wait."""
    rejected: Rejected | None = None

    async def probe(session: AsyncSession) -> Model | None:
        nonlocal rejected
        try:
            return await servable_model(session, owner, model_id, model_name)
        except Rejected as error:
            rejected = error
            return None

    model = await wait_for(sessions, probe, patience_s, interval_s=0.1)
    if model is None:
        assert rejected is not None
        raise rejected
    return model


def serving_checkpoint(model: Model) -> str:
    """The checkpoint that serves a version: its choice (`serve`) of the best by validation loss (the default) or
    the last; the other when the chosen one is not there."""
    if model.serve == "last":
        key = model.latest_checkpoint or model.best_checkpoint
    else:
        key = model.best_checkpoint or model.latest_checkpoint
    assert key is not None
    return key


def serving_version(model: Model) -> str:
    """Changes whenever the serving checkpoint's bytes do (best.pt is rewritten at each new best)."""
    return f"{serving_checkpoint(model)}@{model.best_step}@{model.serve}"


async def checkpoints(session: AsyncSession, model_id: str) -> list[Checkpoint]:
    statement = select(Checkpoint).where(Checkpoint.model_id == model_id).order_by(Checkpoint.step, Checkpoint.key)
    return list((await session.execute(statement)).scalars())


async def latest_evaluation(session: AsyncSession, model_id: str) -> Evaluation | None:
    statement = (
        select(Evaluation).where(Evaluation.model_id == model_id).order_by(Evaluation.created_at.desc()).limit(1)
    )
    return (await session.execute(statement)).scalar_one_or_none()


# -- jobs and their logs ----------------------------------------------------------------------------------------------


async def get_job(session: AsyncSession, owner: Owner, job_id: str) -> Job | None:
    statement = owned(select(Job).where(Job.id == job_id), Job.owner, owner)
    return (await session.execute(statement)).scalar_one_or_none()


async def list_jobs(
    session: AsyncSession, owner: Owner, *, kinds: list[str] | None = None, status: str | None = None,
    model_id: str | None = None, limit: int = 50, offset: int = 0,
) -> tuple[list[Job], int]:
    statement = owned(select(Job), Job.owner, owner)
    if kinds:
        statement = statement.where(Job.kind.in_(kinds))
    for column, value in ((Job.status, status), (Job.model_id, model_id)):
        if value:
            statement = statement.where(column == value)
    return await _page(session, statement.order_by(Job.created_at.desc(), Job.id), limit, offset)


async def place_in_queue(session: AsyncSession, namespace: str, job_id: str) -> tuple[int, int] | None:
    """A queued job's place: how many queued jobs should start before it, and how many run now; None when not
    queued. The queue takes owners in turn (agents/jobs/queue.py), so ahead of it are its owner's older jobs and, of
    each other owner's, as many as the turns it waits for (one more than its owner's older jobs)."""
    row = await session.get(JobQueueRow, (namespace, job_id))
    if row is None or row.state != "queued":
        return None
    mine = JobQueueRow.namespace == namespace
    same_owner = JobQueueRow.owner.is_(None) if row.owner is None else JobQueueRow.owner == row.owner
    own_older = int(await session.scalar(select(func.count()).where(
        mine, same_owner, JobQueueRow.state == "queued", JobQueueRow.created_at < row.created_at)) or 0)
    others = (await session.execute(select(func.count()).where(mine, ~same_owner, JobQueueRow.state == "queued")
                                    .group_by(JobQueueRow.owner))).scalars().all()
    running = await session.scalar(select(func.count()).where(mine, JobQueueRow.state.in_(("running",
                                                                                             "completing"))))
    return own_older + sum(min(count, own_older + 1) for count in others), int(running or 0)


async def active_jobs(session: AsyncSession, owner: Owner) -> int:
    """The owner's training, evaluation and export jobs queued or running (what LFZ_MAX_ACTIVE_JOBS_PER_KEY limits)."""
    statement = owned(select(func.count()).select_from(Job), Job.owner, owner)
    return int(await session.scalar(statement.where(Job.kind.in_(QUEUED_KINDS),
                                                    Job.status.in_(("accepted", "queued", "running")))) or 0)


async def datasets_held(session: AsyncSession, owner: Owner) -> tuple[int, int]:
    """How many datasets the owner has, and their bytes (what the dataset quotas limit)."""
    statement = owned(select(func.count(), func.coalesce(func.sum(Dataset.bytes), 0)), Dataset.owner, owner)
    count, stored = (await session.execute(statement)).one()
    return int(count), int(stored)


async def finished_jobs(session: AsyncSession, owner: Owner, kinds: list[str], before: Any,
                        limit: int) -> list[str]:
    """Ids of the owner's finished jobs of these kinds that finished before `before`, oldest first."""
    statement = owned(select(Job.id), Job.owner, owner).where(
        Job.status.in_(("completed", "failed", "cancelled")), Job.kind.in_(kinds), Job.finished_at < before)
    return list((await session.execute(statement.order_by(Job.finished_at).limit(limit))).scalars())


async def log_visible(session: AsyncSession, owner: Owner, job_id: str) -> bool:
    """Whether the caller may read this job's log: a job row, or (uploads, deletions) a logged event of theirs."""
    if await get_job(session, owner, job_id) is not None:
        return True
    statement = owned(select(JobEventRow.position).where(JobEventRow.job_id == job_id), JobEventRow.owner, owner)
    return (await session.execute(statement.limit(1))).first() is not None


async def read_log(session: AsyncSession, job_id: str, after: int, before: int | None = None) -> list[JobEventRow]:
    """A job's recorded facts with after < seq < before (before None: no upper bound), in seq order."""
    statement = select(JobEventRow).where(JobEventRow.job_id == job_id, JobEventRow.seq > after)
    if before is not None:
        statement = statement.where(JobEventRow.seq < before)
    return list((await session.execute(statement.order_by(JobEventRow.seq, JobEventRow.position))).scalars())


async def last_recorded(session: AsyncSession, job_id: str) -> tuple[int, tuple[int, int] | None]:
    """The highest sequence number recorded for a job (0 when none), and where on the topic that fact was read."""
    row = (
        await session.execute(
            select(JobEventRow.seq, JobEventRow.kafka_partition, JobEventRow.kafka_offset)
            .where(JobEventRow.job_id == job_id)
            .order_by(JobEventRow.seq.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return 0, None
    seq, partition, offset = row
    return seq, (partition, offset) if partition is not None and offset is not None else None


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
    """Read-your-writes: poll until `probe` finds what the record agent is about to write (None or False: not yet),
    or give up after `timeout_s` (None). A fact published a moment ago reaches the tables a little later."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with sessions() as session:
            found = await probe(session)
        if found is not None and found is not False:
            return found
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(interval_s)
