"""Where requests enter the agents: raw bytes become typed commands, or dead letters that say what was wrong.

A bad message never stops an agent. It is kept on the dead-letter topic with its error and coordinates, and when
it carried a usable job id, that job also gets a failed event so that whoever waits for it learns why. A handler
that meets a server which is down waits and tries the same command again, so no request is lost to an outage.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import faust
from faust.types import EventT
from sqlalchemy import case, func, select
from sqlalchemy.dialects import postgresql, sqlite

from agents.runtime import Runtime
from events import FAILED_TYPE_FOR_KIND, Command, DecodeError, Rejected, dead_letter, decode_command, id_from_position
from infra.db.queries import belongs_to
from infra.db.tables import Model, ModelVersionCounter
from infra.publisher import JobLog
from infra.retry import UNAVAILABLE, while_down

log = logging.getLogger(__name__)
C = TypeVar("C", bound=Command)


class Refused(Rejected):
    """A well-formed command that its sender may not give (it names another tenant's job): it becomes a dead
    letter that says why, and touches nothing; no failed fact goes to the job it names."""


def command_agent(app: faust.App, runtime: Runtime, topic: str, command_type: type[C], name: str,
                  handle: Callable[[C], Awaitable[None]], *, concurrency: int = 1,
                  then: Callable[[], None] | None = None) -> None:
    """Declare the agent that decodes `command_type` from `topic` and hands each command to `handle`."""

    async def consume(stream: faust.StreamT) -> None:
        await runtime.ready.wait()
        async for event in stream.events():
            command = await decode(runtime, event, (command_type,))
            if command is not None:
                await handle_safely(runtime, event, command, handle)  # type: ignore[arg-type]
                if then is not None:
                    then()

    consume.__name__ = consume.__qualname__ = name.replace("-", "_")
    channel = app.topic(topic, value_serializer="raw", key_serializer="raw")
    app.agent(channel, name=f"{runtime.topics.prefix}{name}", concurrency=concurrency)(consume)


async def handle_safely(runtime: Runtime, event: EventT, command: Command,
                        handle: Callable[[Command], Awaitable[None]]) -> None:
    """Handle one command: waiting out servers that are down, and turning whatever else goes wrong into a dead
    letter (and a failed fact of the job, except for a refusal)."""
    job_id = getattr(command, "job_id", None)
    try:
        await while_down(lambda: handle(command), UNAVAILABLE, what=f"{command.type} {job_id or ''}",  # type: ignore[attr-defined]
                         logger=log)
    except Refused as refused:
        log.warning("%s refused: %s", command.type, refused.reason)  # type: ignore[attr-defined]
        # No job id: the failed event would land in the log of the job that the sender may not touch.
        await _reject(runtime, event, DecodeError(refused.reason, refused.field))
    except Exception as exc:  # a bug met by one command must not stop the agent
        log.exception("%s could not be handled", command.type)  # type: ignore[attr-defined]
        await _reject(runtime, event, DecodeError(f"internal error: {type(exc).__name__}: {exc}", job_id=job_id,
                                                  kind=command.kind), owner=command.owner)  # type: ignore[attr-defined]


def model_id_of_job(job_id: str) -> str:
    """The id of the model a job creates when its request names none: derived from the job id, so that a request
    delivered twice names the same model."""
    return hashlib.sha256(f"model/{job_id}".encode()).hexdigest()[:32]


def dataset_id_of_job(job_id: str) -> str:
    """The id of the dataset an inline training text becomes: derived from the job id, like `model_id_of_job`."""
    return hashlib.sha256(f"dataset/{job_id}".encode()).hexdigest()[:32]


async def job_id_taken(runtime: Runtime, job_id: str, kind: str | None, owner: str | None) -> bool:
    """`queries.job_ids_taken` of one id, read together with those of the requests that arrive at the same time."""
    return await runtime.ids_taken.read((job_id, kind, owner))


async def refuse_a_taken_job_id(runtime: Runtime, job_id: str, kind: str, owner: str | None,
                                field: str = "job_id") -> None:
    """A request naming a job id that is taken (`job_id_taken`) would append to that job's log (or write over that
    upload). Refused: a dead letter, and nothing touched."""
    if await job_id_taken(runtime, job_id, kind, owner):
        raise Refused(f"{field}: {job_id} is already taken by another job or dataset", field)


async def decode(runtime: Runtime, event: EventT, expected: tuple[type[Command], ...]) -> Command | None:
    """The command, its owner proven when API keys are configured (`events.proof`); None once dead-lettered."""
    message = event.message
    raw = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
    default_id = id_from_position(message.topic, message.partition, message.offset)
    try:
        signer = runtime.signer.signer_of(message.headers, raw) if runtime.signer.enabled else None
    except DecodeError as error:  # no failed fact: an unproven sender may not write into any job's log
        await _reject(runtime, event, error)
        return None
    try:
        command = decode_command(raw, expected, default_id=default_id)
    except DecodeError as error:
        await _reject(runtime, event, error, owner=signer)
        return None
    try:
        owner = runtime.signer.owner(signer, command.owner)  # type: ignore[attr-defined]
    except DecodeError as error:
        await _reject(runtime, event, error)
        return None
    return command.model_copy(update={"owner": owner})


async def _reject(runtime: Runtime, event: EventT, error: DecodeError, owner: str | None = None) -> None:
    message = event.message
    raw = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
    log.warning("dead letter from %s[%d]@%d: %s", message.topic, message.partition, message.offset, error)
    await runtime.publisher.dead_letter(
        dead_letter(raw, error, producer=runtime.producer_name, topic=message.topic,
                    partition=message.partition, offset=message.offset, key=message.key)
    )
    failed = FAILED_TYPE_FOR_KIND.get(error.kind or "")
    if not error.job_id or failed is None:
        return
    # The failed fact goes only to a job id that is free: into a log of someone else's job it would end that job.
    job_id, kind = error.job_id, error.kind or "train"
    if await while_down(lambda: job_id_taken(runtime, job_id, kind, owner), UNAVAILABLE,
                        what=f"checking job id {job_id}", logger=log):
        return
    job = JobLog(runtime.publisher, job_id=job_id, kind=kind, owner=owner)
    await job.emit(failed, reason=f"the request was rejected: {error.reason}", field=error.field)


async def allocate_version(runtime: Runtime, owner: str | None, name: str) -> int:
    """The next version number of an owner's model name: one more than the last given (or recorded, after a replay
    into a fresh database), in one statement, so that requests accepted at once get different numbers."""
    async with runtime.sessions() as session:
        owned = belongs_to(Model.owner, owner)
        recorded = await session.scalar(select(func.max(Model.version)).where(owned, Model.name == name)) or 0
        insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
        statement = insert(ModelVersionCounter).values(owner_key=owner or "", name=name, last=recorded + 1)
        counter = ModelVersionCounter.__table__.c.last
        statement = statement.on_conflict_do_update(
            index_elements=["owner_key", "name"],
            set_={"last": case((counter + 1 > statement.excluded.last, counter + 1), else_=statement.excluded.last)})
        number = (await session.execute(statement.returning(ModelVersionCounter.last))).scalar_one()
        await session.commit()
    return int(number)
