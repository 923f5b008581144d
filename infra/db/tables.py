"""The database: a projection of the job-event log, plus the agents' job queue.

Everything but `job_queue` is rebuilt by replaying `lfz.job.events` from the beginning into empty tables.
`job_queue` is coordination between agent workers (who runs which job, leases, cancel flags), not history.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, MetaData, String, Text, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out, whatever the backend keeps (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    bytes: Mapped[int] = mapped_column(BigInteger)
    characters: Mapped[int | None] = mapped_column(BigInteger)  # unknown for a large upload until it is tokenized
    preview: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(72))  # of the stored bytes: the same file is stored once
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    format: Mapped[str] = mapped_column(String(16), default="text", server_default="text")
    compression: Mapped[str] = mapped_column(String(16), default="none", server_default="none")
    text_column: Mapped[str] = mapped_column(String(200), default="text", server_default="text")
    documents: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_datasets_owner_sha256", "owner", "sha256"),)


class Tokenization(Base):
    """A dataset's tokens as shards in the object store (DatasetTokenized), or one being made (TokenizeProgress)."""

    __tablename__ = "tokenizations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the settings' digest: same settings, same id
    dataset_id: Mapped[str] = mapped_column(String(64), index=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # running | completed | failed
    phase: Mapped[str | None] = mapped_column(String(32))
    tokenizer: Mapped[str | None] = mapped_column(String(16))
    tokenizer_options: Mapped[dict[str, Any] | None] = mapped_column(Json)
    sample_bytes: Mapped[int | None] = mapped_column(BigInteger)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    vocab_size: Mapped[int | None] = mapped_column(Integer)
    dtype: Mapped[str | None] = mapped_column(String(8))
    shards: Mapped[int | None] = mapped_column(Integer)
    manifest_key: Mapped[str | None] = mapped_column(String(300))
    wall_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    # A row is one version of its name: 1, 2, 3 ... in the order the log accepted them (replay gives the same).
    version: Mapped[int | None] = mapped_column(Integer)
    parent_id: Mapped[str | None] = mapped_column(String(64))  # the version this one continued from
    serve: Mapped[str] = mapped_column(String(10), default="best", server_default="best")  # or "last"
    description: Mapped[str] = mapped_column(Text, default="")
    # pending -> training -> completed | failed | cancelled; deleted when removed.
    status: Mapped[str] = mapped_column(String(20))
    tokenizer: Mapped[str | None] = mapped_column(String(20))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    num_parameters: Mapped[int | None] = mapped_column(BigInteger)
    vocab_size: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    max_iters: Mapped[int | None] = mapped_column(Integer)
    dataset_key: Mapped[str | None] = mapped_column(String(200))
    tokenizer_key: Mapped[str | None] = mapped_column(String(200))
    latest_checkpoint: Mapped[str | None] = mapped_column(String(300))
    best_checkpoint: Mapped[str | None] = mapped_column(String(300))
    best_step: Mapped[int | None] = mapped_column(Integer)  # the step whose validation loss was the lowest
    metrics: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    train_job_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    trained_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ModelAlias(Base):
    """`name@alias` -> one version of that name, per owner. Moving an alias rewrites its one row."""

    __tablename__ = "model_aliases"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)  # see `alias_key`
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100))
    alias: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str] = mapped_column(String(64), index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    @staticmethod
    def key_of(owner: str | None, name: str, alias: str) -> str:
        return f"{owner or ''}\x1f{name}\x1f{alias}"


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    model_id: Mapped[str | None] = mapped_column(String(64), index=True)
    model_name: Mapped[str | None] = mapped_column(String(100))
    # accepted -> running -> completed | failed | cancelled
    status: Mapped[str] = mapped_column(String(20), index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int | None] = mapped_column(Integer)
    max_iters: Mapped[int | None] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    eta_s: Mapped[float | None] = mapped_column(Float)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    error_field: Mapped[str | None] = mapped_column(String(200))
    result: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class JobEventRow(Base):
    """The log itself, one row per fact: SSE replay and resume read it, `lfz replay --from database` replays it."""

    __tablename__ = "job_events"
    # A monotonic cursor over all jobs, in the order the log was recorded.
    position: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    owner: Mapped[str | None] = mapped_column(String(64))
    time: Mapped[datetime] = mapped_column(UtcDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    # Where it was read from, so a replay from Kafka can be compared with the table.
    kafka_partition: Mapped[int | None] = mapped_column(Integer)
    kafka_offset: Mapped[int | None] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_job_events_job_id_seq", "job_id", "seq"),)


class Evaluation(Base):
    __tablename__ = "evaluations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the evaluate job's id
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    model_id: Mapped[str] = mapped_column(String(64), index=True)
    report: Mapped[dict[str, Any]] = mapped_column(Json)
    report_key: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    is_best: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class JobQueueRow(Base):
    """Agent coordination (not part of the projection): the queue of train and evaluate jobs and their leases.

    A worker claims a queued row, heartbeats it while the job runs, and marks it done. A row whose heartbeat stops
    is taken over by another worker, which resumes the job from its latest checkpoint; `attempt` fences the old one.
    """

    __tablename__ = "job_queue"
    # Deployments sharing a database (each with its own topic prefix) keep separate queues.
    namespace: Mapped[str] = mapped_column(String(100), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    owner: Mapped[str | None] = mapped_column(String(64))
    # queued -> running -> done
    state: Mapped[str] = mapped_column(String(20), index=True)
    worker: Mapped[str | None] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # every claim adds one: the fencing token
    takeovers: Mapped[int] = mapped_column(Integer, default=0)  # claims from a worker that died: the retry budget
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # back-off after a takeover
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict[str, Any]] = mapped_column(Json)  # the job's kind's JobSpec, as JSON
    # The terminal fact of a completing job, written before it is published (an outbox): whoever takes the job over
    # publishes it again, so the job ends once.
    outbox: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ModelVersionCounter(Base):
    """Agent coordination (not part of the projection): the last version number given to each owner's model name, so
    that two requests accepted at once for one name get different numbers. The number travels in JobAccepted, which
    is how the projection (and a replay) learns it."""

    __tablename__ = "model_version_counters"
    owner_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # the owner, or "" without one
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


PROJECTION_TABLES = (Dataset.__table__, Model.__table__, ModelAlias.__table__, Job.__table__,
                     JobEventRow.__table__, Evaluation.__table__, Checkpoint.__table__)
