"""The train agent: takes a TrainRequested, checks it, records the job in the queue and returns at once.

The training itself runs later in a spawned child process (see `scheduler` and `runs`), so this handler stays
short: the agent keeps polling, its offsets are committed early, and a rebalance never waits for a training run.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import faust

from agents.intake import (
    Refused,
    allocate_version,
    command_agent,
    dataset_id_of_job,
    model_id_of_job,
    refuse_a_taken_job_id,
)
from agents.jobs.queue import JobQueue
from agents.jobs.scheduler import Scheduler
from agents.runtime import Runtime
from agents.tokenize.agent import training_tokens
from agents.tokenize.job import checked_options
from agents.train.job import TrainSpec
from events import (
    DatasetRef,
    DatasetUploaded,
    JobAccepted,
    JobCancelled,
    Rejected,
    TrainFailed,
    TrainRequested,
)
from infra.db import queries
from infra.db.tables import Model
from infra.objectstore import artifacts
from infra.publisher import JobLog
from model.config import ConfigError, resolve_hyperparameters
from model.distributed import check_world

log = logging.getLogger(__name__)


def model_id_for(command: TrainRequested) -> str:
    """The gateway names the model; for a request without one, derive it from the job id (stable on redelivery)."""
    return command.model_id or model_id_of_job(command.job_id)


def register(app: faust.App, runtime: Runtime, scheduler: Scheduler) -> None:
    command_agent(app, runtime, runtime.topics.train_requested, TrainRequested, "train",
                  lambda command: accept(runtime, scheduler.queue, command), then=scheduler.kick)


async def accept(runtime: Runtime, queue: JobQueue, command: TrainRequested) -> None:
    model_id = model_id_for(command)
    job = JobLog(runtime.publisher, job_id=command.job_id, kind="train", owner=command.owner)
    accepted: dict[str, Any] = dict(
        event_id=f"{command.job_id}-accepted", model_id=model_id, model_name=command.model_name,
        description=command.description, tokenizer=command.tokenizer, tokenizer_options=command.tokenizer_options,
        hyperparameters=command.hyperparameters,
    )
    await refuse_a_taken_job_id(runtime, command.job_id, "train", command.owner)
    if await _already_queued(queue, job, accepted):
        return
    try:
        spec = await _checked_spec(runtime, command, model_id)
    except Rejected as rejected:
        # A twin delivery of this request may have been accepted meanwhile, and its model row is what failed the
        # checks ("no checkpoint to continue from"): then this is a redelivery, not a bad request.
        if await _already_queued(queue, job, accepted):
            return
        model_id = await _refused_version(runtime, command, model_id)
        version = await allocate_version(runtime, command.owner, command.model_name) if model_id else None
        await job.emit(JobAccepted, **{**accepted, "model_id": model_id, "version": version})
        await job.emit(TrainFailed, event_id=f"{command.job_id}-rejected", model_id=model_id,
                       reason=rejected.reason, field=rejected.field)
        return
    spec = spec.model_copy(update={"version": await allocate_version(runtime, command.owner, spec.model_name)})
    row = await queue.enqueue(command.job_id, "train", command.owner, spec.model_dump(mode="json"))
    if row is None:
        await _redelivered(queue, job, _accepted_as(accepted, spec))
        return
    await job.emit(JobAccepted, **_accepted_as(accepted, spec))


def _accepted_as(accepted: dict[str, Any], spec: TrainSpec) -> dict[str, Any]:
    """The acceptance of a checked request: the version it makes, of which name, from which parent and dataset."""
    return {**accepted, "model_id": spec.model_id, "model_name": spec.model_name, "parent_id": spec.parent_id,
            "version": spec.version, "dataset_key": spec.dataset_key, "resume": spec.base_checkpoint is not None}


async def _refused_version(runtime: Runtime, command: TrainRequested, model_id: str) -> str | None:
    """The version the facts of a refused request name: the one it would have made. Never another tenant's model
    (the projection would tie that model, or a dataset key, to the sender), nor an existing version of the sender's
    (a refused continuation must not end its parent): a fresh id derived from the job's for that."""
    async with runtime.sessions() as session:
        existing = await session.get(Model, model_id)
        own = existing is not None and await queries.get_model(session, command.owner, model_id, True) is not None
    if existing is None or (own and existing.train_job_id == command.job_id):
        return model_id
    return model_id_of_job(command.job_id) if own else None


async def _already_queued(queue: JobQueue, job: JobLog, accepted: dict[str, Any]) -> bool:
    """A request delivered again (after a rebalance, or produced twice) finds its job in the queue: it must not be
    checked again, since the job's own model row would now make it look like a request to continue training."""
    row = await queue.get(job.job_id)
    if row is None or row.kind != "train":
        return False
    if row.owner != job.owner:  # the job is not recorded yet, but it is someone else's
        raise Refused(f"job_id: {job.job_id} is already taken by another job or dataset", "job_id")
    await _redelivered(queue, job, _accepted_as(accepted, TrainSpec.model_validate(row.spec)))
    return True


async def _redelivered(queue: JobQueue, job: JobLog, accepted: dict[str, Any]) -> None:
    """The request was seen before, or a cancel for it arrived first."""
    row = await queue.get(job.job_id)
    if row is not None and row.kind == "unknown" and row.cancel_requested and row.last_seq == 0:
        await job.emit(JobAccepted, **accepted)
        await job.emit(JobCancelled, reason=row.cancel_reason or "cancelled before it started")
        await queue.set_seq(job.job_id, job.last_seq)
        return
    # Publishing the acceptance again is harmless (same event id) and covers a crash between enqueue and publish.
    if row is not None and row.last_seq <= 1:
        await job.emit(JobAccepted, **accepted)


async def _checked_spec(runtime: Runtime, command: TrainRequested, model_id: str) -> TrainSpec:
    try:
        hp = resolve_hyperparameters(command.hyperparameters)
    except ConfigError as error:
        raise Rejected(f"hyperparameters.{error.field}: {error.message}", f"hyperparameters.{error.field}") from None
    settings = runtime.settings
    try:
        check_world(command.processes, command.hosts, hp.train.batch_size, hp.train.grad_accum,
                    settings.max_train_processes, settings.max_train_hosts)
    except ConfigError as error:
        raise Rejected(f"{error.field}: {error.message}", error.field) from None

    model_name, parent_id = command.model_name, command.parent_id
    base_checkpoint, base_step = None, 0
    async with runtime.sessions() as session:
        existing = await session.get(Model, model_id)
    if existing is not None and existing.status != "deleted" and existing.train_job_id != command.job_id:
        if parent_id is not None:
            raise Rejected(f"model_id: {model_id} names a model version already; a run makes a new one (leave "
                           "model_id out)", "model_id")
        # The id of an existing version: continue it as a new version (as `parent_id` says).
        parent_id, model_id = model_id, model_id_of_job(command.job_id)
    if parent_id is not None:
        field = "parent_id" if command.parent_id is not None else "model_id"
        # A parent that ended a moment ago may not be recorded as ended yet: a busy parent is only final after a
        # few seconds.
        async def settled(session: Any) -> Model | None:
            found = await queries.get_model(session, command.owner, parent_id)
            return found if found is not None and found.status not in ("pending", "training") else None

        parent = await queries.wait_for(runtime.sessions, settled, 3.0, 0.2)
        if parent is None:
            async with runtime.sessions() as session:
                parent = await queries.get_model(session, command.owner, parent_id)
        if parent is None:
            raise Rejected(f"{field}: no model {parent_id}", field)
        if parent.status in ("pending", "training"):
            raise Rejected(f"{field}: model {parent_id} is {parent.status} (job {parent.train_job_id}); wait for "
                           "it to end, or cancel it, before continuing", field)
        if not parent.latest_checkpoint:
            raise Rejected(f"{field}: model {parent_id} has no checkpoint to continue from yet", field)
        # Its latest checkpoint, whatever ended its run (completed, cancelled, failed after a checkpoint); the new
        # version is one of the parent's name.
        base_checkpoint = parent.latest_checkpoint
        base_step = artifacts.step_of(base_checkpoint) or parent.step
        model_name = parent.name
    else:
        check_new_name(model_name)
    dataset_key = await training_dataset(runtime, command.owner, command.dataset, command.job_id,
                                         f"training text of {model_name or model_id}")
    options = checked_options(command.tokenizer, command.tokenizer_options)
    source, tokenization = await training_tokens(runtime, command.owner, dataset_key, command.tokenizer, options)
    return TrainSpec(
        job_id=command.job_id, model_id=model_id, model_name=model_name, owner=command.owner, parent_id=parent_id,
        dataset_key=dataset_key, tokenizer=command.tokenizer, tokenizer_options=command.tokenizer_options,
        hyperparameters=command.hyperparameters, preset=hp.preset, base_checkpoint=base_checkpoint,
        base_step=base_step, processes=command.processes, hosts=command.hosts, source=source,
        tokenization_id=tokenization,
        tokens_per_shard=runtime.settings.tokens_per_shard,
    )


def check_new_name(name: str) -> None:
    if "@" in name or "/" in name:
        raise Rejected(f"model_name: {name!r} may not hold '@' or '/' (they name an alias and a version: "
                       "name@alias, name/version)", "model_name")


async def training_dataset(runtime: Runtime, owner: str | None, dataset: DatasetRef, job_id: str, name: str) -> str:
    """The key of the dataset a training request names: its inline text, stored as one of the owner's datasets, or
    an upload's key, which must be one of the owner's."""
    if dataset.text is not None:
        if not dataset.text.strip():
            raise Rejected("dataset.text: the dataset is empty", "dataset.text")
        return await store_inline_text(runtime, owner, dataset.text, job_id, name)
    key = dataset.key
    assert key is not None
    # A key is easy to write down: it must be one of this owner's uploads or texts, not just exist. An upload
    # answered a moment ago may not be recorded yet, so a miss is only final after a few seconds.
    readable = await queries.wait_for(runtime.sessions, lambda s: queries.dataset_readable(s, owner, key), 3.0, 0.2)
    if readable is None or not await runtime.astore.exists(key):
        raise Rejected(f"dataset.key: no dataset at {key}", "dataset.key")
    return key


async def store_inline_text(runtime: Runtime, owner: str | None, text: str, job_id: str, name: str) -> str:
    """An inline text becomes one of its owner's datasets, as an upload does: the owner's dataset of the same bytes
    when there is one, else a new one (its id derived from the job's, so a redelivery stores no second copy). Who may
    read a text is then decided by the dataset rows alone, for every later run and evaluation of this model."""
    data = text.encode()
    async with runtime.sessions() as session:
        same = await queries.dataset_with_digest(session, owner, hashlib.sha256(data).hexdigest())
    if same is not None and await runtime.astore.exists(same.key):
        return same.key
    dataset_id = dataset_id_of_job(job_id)
    key = artifacts.dataset_key(dataset_id)
    await runtime.astore.put_bytes(key, data, "text/plain; charset=utf-8")
    await runtime.publisher.publish(DatasetUploaded.of_text(
        dataset_id=dataset_id, name=name[:200], key=key, data=data, text=text, owner=owner,
        producer=runtime.publisher.producer_id), wait=True)
    return key
