"""The train agent: takes a TrainRequested, checks it, records the job in the queue and returns at once.

The training itself runs later in a spawned child process (see `scheduler` and `runs`), so this handler stays
short: the agent keeps polling, its offsets are committed early, and a rebalance never waits for a training run.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import faust

from agents.intake import Refused, command_agent, dataset_id_of_job, model_id_of_job, refuse_a_taken_job_id
from agents.jobs.queue import JobQueue
from agents.jobs.scheduler import Scheduler
from agents.runtime import Runtime
from agents.train.job import TrainSpec
from events import DatasetUploaded, JobAccepted, JobCancelled, Rejected, TrainFailed, TrainRequested
from infra.db import queries
from infra.db.tables import Model
from infra.objectstore import artifacts
from infra.publisher import JobLog
from model.config import ConfigError, TrainConfig, resolve_hyperparameters
from model.distributed import World, share_of

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
        # The facts of a refused request name only what the sender may name: a model id of another tenant's (or a
        # dataset key) in them would let the projection tie that model (or that dataset) to the sender.
        model_id = await _own_or_new(runtime, command.owner, model_id)
        await job.emit(JobAccepted, **{**accepted, "model_id": model_id})
        await job.emit(TrainFailed, event_id=f"{command.job_id}-rejected", model_id=model_id,
                       reason=rejected.reason, field=rejected.field)
        return
    accepted.update(dataset_key=spec.dataset_key, resume=spec.base_checkpoint is not None)
    row = await queue.enqueue(command.job_id, "train", command.owner, spec.model_dump(mode="json"))
    if row is None:
        await _redelivered(queue, job, accepted)
        return
    await job.emit(JobAccepted, **accepted)


async def _own_or_new(runtime: Runtime, owner: str | None, model_id: str) -> str | None:
    """`model_id` when it names no model yet or one of the owner's; None when it is another tenant's."""
    async with runtime.sessions() as session:
        if await session.get(Model, model_id) is None or await queries.get_model(session, owner, model_id, True):
            return model_id
    return None


async def _already_queued(queue: JobQueue, job: JobLog, accepted: dict[str, Any]) -> bool:
    """A request delivered again (after a rebalance, or produced twice) finds its job in the queue: it must not be
    checked again, since the job's own model row would now make it look like a request to continue training."""
    row = await queue.get(job.job_id)
    if row is None or row.kind != "train":
        return False
    if row.owner != job.owner:  # the job is not recorded yet, but it is someone else's
        raise Refused(f"job_id: {job.job_id} is already taken by another job or dataset", "job_id")
    spec = TrainSpec.model_validate(row.spec)
    await _redelivered(queue, job, {**accepted, "dataset_key": spec.dataset_key,
                                      "resume": spec.base_checkpoint is not None})
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
    check_processes(command.processes, hp.train, runtime.settings.max_train_processes)

    base_checkpoint, base_step = None, 0
    async with runtime.sessions() as session:
        existing = await session.get(Model, model_id)
        visible = await queries.get_model(session, command.owner, model_id)
    if existing is not None and existing.status != "deleted":
        if visible is None:
            raise Rejected(f"model_id: no model {model_id}", "model_id")
        if existing.status in ("pending", "training") and existing.train_job_id != command.job_id:
            raise Rejected(f"model_id: model {model_id} is {existing.status} (job {existing.train_job_id}); wait for "
                           "it to end, or cancel it, before continuing", "model_id")
        if not existing.latest_checkpoint:
            raise Rejected(f"model_id: model {model_id} has no checkpoint to continue from yet", "model_id")
        # Its latest checkpoint, whatever ended its last run (completed, cancelled, failed after a checkpoint).
        base_checkpoint = existing.latest_checkpoint
        base_step = artifacts.step_of(base_checkpoint) or existing.step

    if command.dataset.text is not None:
        if not command.dataset.text.strip():
            raise Rejected("dataset.text: the dataset is empty", "dataset.text")
        dataset_key = await _stored_text(runtime, command, model_id)
    else:
        dataset_key = command.dataset.key
        assert dataset_key is not None
        # A key is easy to write down: it must be one of this owner's uploads or texts, not just exist. An upload
        # answered a moment ago may not be recorded yet, so a miss is only final after a few seconds.
        readable = await queries.wait_for(runtime.sessions,
                                          lambda s: queries.dataset_readable(s, command.owner, dataset_key), 3.0, 0.2)
        if readable is None or not await runtime.astore.exists(dataset_key):
            raise Rejected(f"dataset.key: no dataset at {dataset_key}", "dataset.key")
    return TrainSpec(
        job_id=command.job_id, model_id=model_id, model_name=command.model_name, owner=command.owner,
        dataset_key=dataset_key, tokenizer=command.tokenizer, tokenizer_options=command.tokenizer_options,
        hyperparameters=command.hyperparameters, preset=hp.preset, base_checkpoint=base_checkpoint,
        base_step=base_step, processes=command.processes,
    )


def check_processes(processes: int, train: TrainConfig, most: int) -> None:
    """A run of several processes needs a global batch they can share, and no more of them than a job may have."""
    if processes > most:
        raise Rejected(f"processes: at most {most} training processes per job here (LFZ_MAX_TRAIN_PROCESSES), "
                       f"not {processes}", "processes")
    try:
        share_of(World(0, processes), train.batch_size, train.grad_accum)
    except ConfigError as error:
        raise Rejected(f"hyperparameters.{error.field}: {error.message}", f"hyperparameters.{error.field}") from None


async def _stored_text(runtime: Runtime, command: TrainRequested, model_id: str) -> str:
    """An inline text becomes one of its owner's datasets, as an upload does: the owner's dataset of the same bytes
    when there is one, else a new one (its id derived from the job's, so a redelivery stores no second copy). Who may
    read a text is then decided by the dataset rows alone, for every later run and evaluation of this model."""
    text = command.dataset.text
    assert text is not None
    data = text.encode()
    async with runtime.sessions() as session:
        same = await queries.dataset_with_digest(session, command.owner, hashlib.sha256(data).hexdigest())
    if same is not None and await runtime.astore.exists(same.key):
        return same.key
    dataset_id = dataset_id_of_job(command.job_id)
    key = artifacts.dataset_key(dataset_id)
    await runtime.astore.put_bytes(key, data, "text/plain; charset=utf-8")
    name = f"training text of {command.model_name or model_id}"[:200]
    await runtime.publisher.publish(DatasetUploaded.of_text(
        dataset_id=dataset_id, name=name, key=key, data=data, text=text, owner=command.owner,
        producer=runtime.publisher.producer_id), wait=True)
    return key
