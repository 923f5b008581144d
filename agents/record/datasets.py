"""The datasets' part of the projection: a dataset row per upload, and a row per tokenization of a dataset, which
its progress facts keep current and DatasetTokenized completes. A tokenize job is a job (kind `tokenize`); a training
job that tokenizes its dataset first reports the same facts under its own id."""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from events import (
    DatasetDeleted,
    DatasetTokenized,
    DatasetUploaded,
    JobCancelled,
    TokenizeCompleted,
    TokenizeFailed,
    TokenizeProgress,
    TrainFailed,
)
from events.job import JobEvent
from infra.db.queries import belongs_to
from infra.db.tables import Dataset, Job, Tokenization


async def on_uploaded(session: AsyncSession, event: DatasetUploaded) -> None:
    if await session.get(Dataset, event.dataset_id) is None:
        session.add(
            Dataset(
                id=event.dataset_id, owner=event.owner, name=event.name, key=event.key, bytes=event.bytes,
                characters=event.characters, preview=event.preview, sha256=event.sha256, created_at=event.time,
                format=event.format, compression=event.compression, text_column=event.text_column,
            )
        )


async def on_deleted(session: AsyncSession, event: DatasetDeleted) -> None:
    await session.execute(delete(Dataset).where(Dataset.id == event.dataset_id, belongs_to(Dataset.owner, event.owner)))
    await session.execute(delete(Tokenization).where(Tokenization.dataset_id == event.dataset_id,
                                                     belongs_to(Tokenization.owner, event.owner)))


async def _tokenization(session: AsyncSession, event: TokenizeProgress | DatasetTokenized) -> Tokenization | None:
    """The row of this tokenization, made on its first fact; None when the dataset is not the fact's owner's (a
    forged fact changes nothing)."""
    dataset = await session.get(Dataset, event.dataset_id)
    if dataset is None or dataset.owner != event.owner:
        return None
    row = await session.get(Tokenization, event.tokenization_id)
    if row is None:
        row = Tokenization(id=event.tokenization_id, dataset_id=event.dataset_id, owner=event.owner,
                           job_id=event.job_id, status="running", bytes_done=0, bytes_total=0, tokens=0,
                           updated_at=event.time)
        session.add(row)
    elif row.dataset_id != event.dataset_id:
        return None
    return row


async def on_progress(session: AsyncSession, event: TokenizeProgress) -> None:
    row = await _tokenization(session, event)
    if row is None or row.status == "completed":
        return
    row.status, row.job_id, row.error = "running", event.job_id, None
    row.phase, row.bytes_done, row.bytes_total, row.tokens = event.phase, event.bytes_done, event.bytes_total, \
        event.tokens
    row.updated_at = event.time
    job = await session.get(Job, event.job_id)
    if job is not None and job.kind == "tokenize" and job.status == "accepted":
        job.status, job.started_at = "running", job.started_at or event.time


async def on_tokenized(session: AsyncSession, event: DatasetTokenized) -> None:
    row = await _tokenization(session, event)
    if row is None:
        return
    row.status, row.phase, row.error = "completed", None, None
    row.tokenizer, row.tokenizer_options, row.sample_bytes = event.tokenizer, event.tokenizer_options, \
        event.sample_bytes
    row.bytes_done = row.bytes_total = event.source_bytes
    row.tokens, row.vocab_size, row.dtype, row.shards = event.tokens, event.vocab_size, event.dtype, event.shards
    row.manifest_key, row.wall_s, row.updated_at = event.manifest_key, event.wall_s, event.time
    dataset = await session.get(Dataset, event.dataset_id)
    if dataset is not None:
        dataset.characters, dataset.documents = event.characters, event.documents


async def on_completed(session: AsyncSession, event: TokenizeCompleted) -> None:
    job = await session.get(Job, event.job_id)
    if job is None or job.kind != "tokenize":
        return
    job.status, job.finished_at, job.eta_s, job.progress = "completed", event.time, None, 1.0
    job.result = event.model_dump(mode="json", include={"dataset_id", "tokenization_id", "manifest_key", "tokens",
                                                        "wall_s", "mb_per_s", "tokens_per_s"})


async def on_job_ended(session: AsyncSession, event: TokenizeFailed | TrainFailed | JobCancelled) -> None:
    """A job that ended without finishing its tokenization leaves it failed (another run may make it later)."""
    reason = getattr(event, "reason", "the job ended")
    await session.execute(update(Tokenization).where(Tokenization.job_id == event.job_id,
                                                     Tokenization.status == "running")
                          .values(status="failed", error=reason, updated_at=event.time))


HANDLERS: dict[type[JobEvent], object] = {
    DatasetUploaded: on_uploaded,
    DatasetDeleted: on_deleted,
    TokenizeProgress: on_progress,
    DatasetTokenized: on_tokenized,
    TokenizeCompleted: on_completed,
}
