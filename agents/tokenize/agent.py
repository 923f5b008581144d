"""The tokenize agent: checks a TokenizeRequested (one of the sender's datasets, the tokenizer's options) and queues
the tokenization, which runs in a child process. Also how any job finds a dataset's file and format, and a finished
tokenization that suits a training run."""

from __future__ import annotations

import faust

from agents.intake import command_agent, refuse_a_taken_job_id
from agents.jobs.queue import JobQueue
from agents.jobs.scheduler import Scheduler
from agents.runtime import Runtime
from agents.tokenize.job import DatasetSource, TokenizeSpec, checked_options
from events import JobAccepted, Rejected, TokenizeFailed, TokenizeRequested
from infra.db import queries
from infra.db.tables import Dataset
from infra.publisher import JobLog


def register(app: faust.App, runtime: Runtime, scheduler: Scheduler) -> None:
    command_agent(app, runtime, runtime.topics.tokenize_requested, TokenizeRequested, "tokenize",
                  lambda command: accept(runtime, scheduler.queue, command), then=scheduler.kick)


def source_of(row: Dataset | None, key: str) -> DatasetSource:
    """How to read the dataset at `key` (plain text when its row is not recorded yet: an inline text just stored)."""
    if row is None:
        return DatasetSource.at(key)
    return DatasetSource.at(key, format=row.format, compression=row.compression, text_column=row.text_column)


async def dataset_source(runtime: Runtime, owner: str | None, key: str) -> DatasetSource:
    async with runtime.sessions() as session:
        return source_of(await queries.dataset_by_key(session, owner, key), key)


async def training_tokens(runtime: Runtime, owner: str | None, key: str, tokenizer: str,
                          options: dict[str, int]) -> tuple[DatasetSource, str | None]:
    """The dataset's source, and the newest finished tokenization of it with this tokenizer and options (whatever
    sample it trained on), for a training run to read instead of tokenizing again."""
    async with runtime.sessions() as session:
        row = await queries.dataset_by_key(session, owner, key)
        done = await queries.finished_tokenizations(session, row.id, tokenizer) if row is not None else []
    match = next((t.id for t in done if (t.tokenizer_options or {}) == options), None)
    return source_of(row, key), match


async def accept(runtime: Runtime, queue: JobQueue, command: TokenizeRequested) -> None:
    await refuse_a_taken_job_id(runtime, command.job_id, "tokenize", command.owner)
    job = JobLog(runtime.publisher, job_id=command.job_id, kind="tokenize", owner=command.owner)
    request = command.model_dump(mode="json")
    try:
        options = checked_options(command.tokenizer, command.tokenizer_options)
        row = await queries.wait_for(runtime.sessions,
                                     lambda s: queries.get_dataset(s, command.owner, command.dataset_id), 3.0, 0.2)
        if row is None:
            raise Rejected(f"dataset_id: no dataset {command.dataset_id}", "dataset_id")
    except Rejected as error:
        await job.emit(JobAccepted, event_id=f"{command.job_id}-accepted", request=request)
        await job.emit(TokenizeFailed, event_id=f"{command.job_id}-rejected", dataset_id=command.dataset_id,
                       reason=error.reason, field=error.field)
        return
    spec = TokenizeSpec(job_id=command.job_id, model_id=command.dataset_id, owner=command.owner,
                        source=source_of(row, row.key), tokenizer=command.tokenizer, tokenizer_options=options,
                        sample_bytes=command.sample_bytes, tokens_per_shard=runtime.settings.tokens_per_shard)
    if await queue.enqueue(command.job_id, "tokenize", command.owner, spec.model_dump(mode="json")) is None:
        row = await queue.get(command.job_id)
        if row is None or row.last_seq > 1:
            return
    await job.emit(JobAccepted, event_id=f"{command.job_id}-accepted", dataset_key=spec.source.key,
                   tokenizer=command.tokenizer, request=request)
