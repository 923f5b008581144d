"""The projection: how each fact changes the tables. Used by the record agent and by `lfz replay`.

Applying is idempotent: the fact's row in `job_events` is inserted first with its event id as the key, and the
tables change only when that insert took place, so the same event delivered twice changes nothing.

A job (and a dataset) belongs to the owner of its first fact. A later fact under the same id that states another
owner or another kind is turned away before anything is written, its log row included: recorded, it would end
someone else's job, or give its sender a way into that job's log. The caller dead-letters what was turned away.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from agents.record import datasets, registry, sweeps
from events import (
    JOB_KINDS,
    CheckpointSaved,
    EvaluationCompleted,
    EvaluationFailed,
    ExportCompleted,
    ExportFailed,
    GenerationCompleted,
    GenerationFailed,
    ImportFailed,
    JobAccepted,
    JobCancelled,
    JobEvent,
    JobsPruned,
    ModelDeleted,
    ModelImported,
    SweepFailed,
    TokenizeFailed,
    TokensGenerated,
    TrainCompleted,
    TrainFailed,
    TrainProgress,
    TrainStarted,
    ValidationCompleted,
    utc_now,
)
from infra.db.queries import belongs_to
from infra.db.tables import Checkpoint, Dataset, Evaluation, Job, JobEventRow, Model
from infra.joblog import Recorded


async def apply(session: AsyncSession, recorded: Recorded) -> bool:
    """Record one fact and apply it; False when it had been recorded before. The caller commits."""
    return await apply_batch(session, [recorded]) == 1


async def apply_batch(session: AsyncSession, batch: list[Recorded],
                      turned_away: list[tuple[Recorded, str]] | None = None) -> int:
    """Record a batch of facts (one statement for their log rows) and apply the new ones, in order. Facts whose
    owner or kind is not their job's are not recorded: they go to `turned_away`, with why."""
    batch, refused, jobs = await _split_by_owner(session, batch)
    if turned_away is not None:
        turned_away.extend(refused)
    new = await _insert_log_rows(session, batch)
    if _make_jobs(session, jobs, [r.event for r in batch if r.event.event_id in new and r.event.kind in JOB_KINDS]):
        await session.flush()  # one INSERT for all of them; from now on `session.get` finds them without a query
    applied = 0
    for recorded in batch:
        event = recorded.event
        if event.event_id not in new:
            continue
        new.discard(event.event_id)  # the same fact twice in one batch is applied once
        if event.kind in JOB_KINDS:
            _apply_to_job(jobs[event.job_id], event)
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            await handler(session, event)
        applied += 1
    return applied


async def _split_by_owner(session: AsyncSession, batch: list[Recorded]
                          ) -> tuple[list[Recorded], list[tuple[Recorded, str]], dict[str, Job]]:
    """The facts to record, those turned away, and the batch's jobs that exist: loaded in one statement, so that
    applying the facts reads none of them again (`session.get` finds them in the session)."""
    ids = {recorded.event.job_id for recorded in batch}
    rows = {job.id: job for job in (await session.execute(select(Job).where(Job.id.in_(ids)))).scalars()}
    jobs = {job_id: (job.kind, job.owner) for job_id, job in rows.items()}
    datasets = {dataset_id: owner for dataset_id, owner in
                (await session.execute(select(Dataset.id, Dataset.owner).where(Dataset.id.in_(ids)))).all()}
    kept: list[Recorded] = []
    refused: list[tuple[Recorded, str]] = []
    for recorded in batch:
        event = recorded.event
        if event.kind in JOB_KINDS:
            known = jobs.setdefault(event.job_id, (event.kind, event.owner))
            if event.job_id in datasets:
                refused.append((recorded, f"job_id: {event.job_id} names a dataset, not a {event.kind} job"))
                continue
            if known != (event.kind, event.owner):
                refused.append((recorded, f"owner: this fact's owner or kind ({event.kind}) is not its job's; a job "
                                          f"belongs to the owner of its first fact"))
                continue
        elif event.kind == "dataset":
            owner = datasets.setdefault(event.job_id, event.owner)
            if event.job_id in jobs or owner != event.owner:
                refused.append((recorded, f"owner: dataset {event.job_id} belongs to another owner, or its id "
                                          f"names a job"))
                continue
        kept.append(recorded)
    return kept, refused, rows


async def _insert_log_rows(session: AsyncSession, batch: list[Recorded]) -> set[str]:
    """Insert the facts' log rows; the event ids that were not there before."""
    if not batch:
        return set()
    now = utc_now()
    rows, seen = [], set()
    for recorded in batch:
        event = recorded.event
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        rows.append(dict(
            event_id=event.event_id, job_id=event.job_id, seq=event.seq, type=event.type,  # type: ignore[attr-defined]
            owner=event.owner, time=event.time, data=event.model_dump(mode="json"),
            kafka_partition=recorded.partition, kafka_offset=recorded.offset, recorded_at=now,
        ))
    insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    # One statement of many rows, compiled once for any number of them (a VALUES list would compile per count).
    statement = insert(JobEventRow).on_conflict_do_nothing(index_elements=["event_id"])
    result = await session.execute(statement.returning(JobEventRow.event_id), rows)
    return set(result.scalars().all())


def _make_jobs(session: AsyncSession, jobs: dict[str, Job], events: list[JobEvent]) -> bool:
    """The row of each job whose first fact is among `events`, added to `jobs` and to the session; whether any."""
    made = False
    for event in events:
        if event.job_id not in jobs:
            jobs[event.job_id] = Job(
                id=event.job_id, owner=event.owner, kind=event.kind, status="accepted", progress=0.0, attempt=0,
                result={}, last_seq=0, created_at=event.time, updated_at=event.time,
            )
            session.add(jobs[event.job_id])
            made = True
    return made


def _apply_to_job(job: Job, event: JobEvent) -> None:
    job.last_seq = max(job.last_seq or 0, event.seq)
    job.updated_at = event.time
    model_id = getattr(event, "model_id", None)
    if model_id and not job.model_id:
        job.model_id = model_id


def _finish(job: Job, status: str, event: JobEvent) -> None:
    job.status = status
    job.finished_at = event.time
    job.eta_s = None


async def _job(session: AsyncSession, event: JobEvent) -> Job:
    job = await session.get(Job, event.job_id)
    assert job is not None  # _make_jobs made it
    return job


async def _model(session: AsyncSession, model_id: str | None) -> Model | None:
    return await session.get(Model, model_id) if model_id else None


async def _on_accepted(session: AsyncSession, event: JobAccepted) -> None:
    job = await _job(session, event)
    job.model_name = event.model_name
    if event.kind not in ("train", "import") or not event.model_id:
        return
    model = await _model(session, event.model_id)
    if model is None:
        name = event.model_name or event.model_id
        model = Model(
            id=event.model_id, owner=event.owner, name=name,
            version=event.version or await registry.next_version(session, event.owner, name), parent_id=event.parent_id,
            serve="best", description=event.description, tokenizer=event.tokenizer,
            hyperparameters=event.hyperparameters, config={}, metrics={}, progress=0.0, step=0, created_at=event.time,
        )
        session.add(model)
    if model.status != "deleted":
        model.status = "pending" if model.trained_at is None else model.status
    model.hyperparameters = event.hyperparameters  # the latest run's (a continue names the steps it adds)
    model.dataset_key = event.dataset_key or model.dataset_key
    model.train_job_id = event.job_id
    model.updated_at = event.time


async def _on_started(session: AsyncSession, event: TrainStarted) -> None:
    job = await _job(session, event)
    job.status = "running"
    job.started_at = job.started_at or event.time
    job.attempt, job.worker, job.max_iters = event.attempt, event.worker, event.max_iters
    job.step = event.resumed_from_step
    model = await _model(session, event.model_id)
    if model is not None and model.status != "deleted":
        model.status = "training"
        model.config = event.config
        model.num_parameters = event.num_parameters
        model.vocab_size = event.vocab_size
        model.tokenizer_key = event.tokenizer_key or model.tokenizer_key
        model.max_iters = event.max_iters
        model.updated_at = event.time


async def _on_progress(session: AsyncSession, event: TrainProgress) -> None:
    job = await _job(session, event)
    job.status = "running"
    job.step, job.max_iters, job.loss = event.step, event.max_iters, event.loss
    job.progress, job.tokens_per_s, job.eta_s = event.progress, event.tokens_per_s, event.eta_s
    model = await _model(session, job.model_id)
    if model is not None and model.status != "deleted":
        model.progress, model.step, model.updated_at = event.progress, event.step, event.time


async def _on_validation(session: AsyncSession, event: ValidationCompleted) -> None:
    job = await _job(session, event)
    job.val_loss = event.val_loss
    model = await _model(session, job.model_id)
    if model is not None:
        model.metrics = {**model.metrics, "val_loss": event.val_loss, "best_val_loss": event.best_val_loss}


async def _on_checkpoint(session: AsyncSession, event: CheckpointSaved) -> None:
    if await session.get(Checkpoint, event.key) is None:
        session.add(
            Checkpoint(
                key=event.key, model_id=event.model_id, job_id=event.job_id, step=event.step, sha256=event.sha256,
                bytes=event.bytes, is_best=event.is_best, created_at=event.time,
            )
        )
    if event.is_best:  # exactly one checkpoint of a model is the best: this one
        others = (Checkpoint.model_id == event.model_id, Checkpoint.key != event.key)
        await session.execute(update(Checkpoint).where(*others).values(is_best=False))
    if event.pruned:  # their objects are gone (the best lives on as best.pt, so its row stays)
        pruned = (Checkpoint.key.in_(event.pruned), Checkpoint.is_best.is_(False))
        await session.execute(delete(Checkpoint).where(*pruned))
    model = await _model(session, event.model_id)
    if model is not None:
        model.latest_checkpoint = event.key
        if event.is_best:
            model.best_checkpoint = event.best_key or event.key
            model.best_step = event.step


async def _on_train_completed(session: AsyncSession, event: TrainCompleted) -> None:
    job = await _job(session, event)
    _finish(job, "completed", event)
    job.progress, job.step = 1.0, event.final_step
    job.val_loss = event.val_loss if event.val_loss is not None else job.val_loss
    job.result = event.model_dump(
        mode="json", include={"final_step", "train_loss", "val_loss", "best_val_loss", "perplexity", "wall_s",
                              "tokens_per_s", "num_parameters", "checkpoint_key", "best_checkpoint_key",
                              "stopped_early"},
    )
    model = await _model(session, event.model_id)
    if model is not None and model.status != "deleted":
        model.status, model.progress, model.step = "completed", 1.0, event.final_step
        model.num_parameters = event.num_parameters
        model.latest_checkpoint = event.checkpoint_key
        if event.best_checkpoint_key or not model.best_checkpoint:  # without a validation, the last one serves
            model.best_checkpoint = event.best_checkpoint_key or event.checkpoint_key
            model.best_step = model.best_step if event.best_checkpoint_key else event.final_step
        metrics: dict[str, Any] = {k: v for k, v in job.result.items() if v is not None}
        model.metrics = {**model.metrics, **metrics}
        model.error, model.trained_at, model.updated_at = None, event.time, event.time


async def _end_model_without_success(session: AsyncSession, job: Job, status: str, error: str | None) -> None:
    model = await _model(session, job.model_id)
    if model is None or model.status == "deleted" or job.kind not in ("train", "import"):
        return
    # A model that finished an earlier training run stays usable when a continuation fails or is cancelled.
    model.status = "completed" if model.trained_at is not None else status
    model.error = error
    model.updated_at = job.updated_at


async def _on_train_failed(session: AsyncSession, event: TrainFailed) -> None:
    job = await _job(session, event)
    _finish(job, "failed", event)
    job.error, job.error_field = event.reason, event.field
    await _end_model_without_success(session, job, "failed", event.reason)
    await datasets.on_job_ended(session, event)


async def _on_cancelled(session: AsyncSession, event: JobCancelled) -> None:
    job = await _job(session, event)
    _finish(job, "cancelled", event)
    job.error = event.reason
    await _end_model_without_success(session, job, "cancelled", event.reason)
    await datasets.on_job_ended(session, event)


async def _on_evaluation_completed(session: AsyncSession, event: EvaluationCompleted) -> None:
    job = await _job(session, event)
    _finish(job, "completed", event)
    job.progress, job.result = 1.0, event.report
    if await session.get(Evaluation, event.job_id) is None:
        session.add(
            Evaluation(
                id=event.job_id, owner=event.owner, model_id=event.model_id, report=event.report,
                report_key=event.report_key, created_at=event.time,
            )
        )
    model = await _model(session, event.model_id)
    if model is not None:
        model.metrics = {**model.metrics, "last_evaluation": event.job_id}


async def _on_export_completed(session: AsyncSession, event: ExportCompleted) -> None:
    job = await _job(session, event)
    _finish(job, "completed", event)
    job.progress = 1.0
    job.result = event.model_dump(mode="json", include={"format", "dtype", "architecture", "step", "checkpoint_key",
                                                        "files"})


async def _on_failed(session: AsyncSession, event: EvaluationFailed | GenerationFailed | ExportFailed | ImportFailed
                     | SweepFailed | TokenizeFailed) -> None:
    job = await _job(session, event)
    _finish(job, "failed", event)
    job.error, job.error_field = event.reason, event.field
    await _end_model_without_success(session, job, "failed", event.reason)
    if isinstance(event, TokenizeFailed):
        await datasets.on_job_ended(session, event)


async def _on_model_imported(session: AsyncSession, event: ModelImported) -> None:
    job = await _job(session, event)
    _finish(job, "completed", event)
    job.progress, job.step = 1.0, 0
    job.result = event.model_dump(mode="json", include={"architecture", "num_parameters", "checkpoint_key"})
    model = await _model(session, event.model_id)
    if model is not None and model.status != "deleted":
        model.status, model.progress, model.step = "completed", 1.0, 0
        model.config, model.num_parameters, model.vocab_size = event.config, event.num_parameters, event.vocab_size
        model.tokenizer = event.tokenizer
        model.tokenizer_key = event.tokenizer_key
        model.latest_checkpoint = model.latest_checkpoint or event.checkpoint_key
        model.best_checkpoint, model.best_step = event.checkpoint_key, 0
        model.metrics = {**model.metrics, "imported_from": event.architecture}
        model.error, model.trained_at, model.updated_at = None, event.time, event.time


async def _on_tokens(session: AsyncSession, event: TokensGenerated) -> None:
    job = await _job(session, event)
    if job.status == "accepted":
        job.status, job.started_at = "running", event.time


async def _on_generation_completed(session: AsyncSession, event: GenerationCompleted) -> None:
    job = await _job(session, event)
    _finish(job, "completed", event)
    job.progress = 1.0
    job.result = event.model_dump(
        mode="json", include={"completions", "prompt_tokens", "completion_tokens", "ttft_ms", "total_ms",
                              "tokens_per_s"},
    )


async def _on_jobs_pruned(session: AsyncSession, event: JobsPruned) -> None:
    """Only the owner's finished jobs go (whatever else the fact names); their log rows in the database with them."""
    finished = (Job.id.in_(event.job_ids), Job.status.in_(("completed", "failed", "cancelled")),
                belongs_to(Job.owner, event.owner))
    gone = list((await session.execute(select(Job.id).where(*finished))).scalars())
    if gone:
        await session.execute(delete(JobEventRow).where(JobEventRow.job_id.in_(gone)))
        await session.execute(delete(Job).where(Job.id.in_(gone)))


async def _on_model_deleted(session: AsyncSession, event: ModelDeleted) -> None:
    model = await _model(session, event.model_id)
    if model is not None and model.owner == event.owner:  # another owner's delete changes nothing
        model.status, model.updated_at = "deleted", event.time
        await registry.forget_aliases_of(session, model.id)


_HANDLERS: dict[type[JobEvent], Any] = {
    JobAccepted: _on_accepted,
    TrainStarted: _on_started,
    TrainProgress: _on_progress,
    ValidationCompleted: _on_validation,
    CheckpointSaved: _on_checkpoint,
    TrainCompleted: _on_train_completed,
    TrainFailed: _on_train_failed,
    JobCancelled: _on_cancelled,
    EvaluationCompleted: _on_evaluation_completed,
    EvaluationFailed: _on_failed,
    ExportCompleted: _on_export_completed,
    ExportFailed: _on_failed,
    ModelImported: _on_model_imported,
    ImportFailed: _on_failed,
    GenerationFailed: _on_failed,
    TokensGenerated: _on_tokens,
    GenerationCompleted: _on_generation_completed,
    JobsPruned: _on_jobs_pruned,
    ModelDeleted: _on_model_deleted,
    SweepFailed: _on_failed,
    TokenizeFailed: _on_failed,
    **registry.HANDLERS,
    **datasets.HANDLERS,
    **sweeps.HANDLERS,
}
