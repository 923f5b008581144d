"""What the gateway answers with: response models built from projection rows. Also the OpenAPI response schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from infra.db.queries import serving_checkpoint
from infra.db.tables import Checkpoint, Dataset, Evaluation, Job, Model, Tokenization
from infra.objectstore.artifacts import step_of

API = "/api/v1"


class View(BaseModel):
    def json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ErrorDetail(View):
    code: str = Field(description="Stable and machine-readable, e.g. `not_found`, `invalid`, `unavailable`.")
    message: str
    field: str | None = Field(default=None, description="The request field at fault, as a dotted path.")


class ErrorBody(View):
    error: ErrorDetail


class TokenizationView(View):
    """One tokenization of a dataset: its tokens as shards in the object store, or one being made."""

    id: str
    dataset_id: str
    job_id: str
    status: Literal["running", "completed", "failed"]
    phase: str | None = None
    tokenizer: str | None = None
    tokenizer_options: dict[str, int] | None = None
    sample_bytes: int | None = None
    bytes_done: int
    bytes_total: int
    tokens: int
    vocab_size: int | None = None
    dtype: str | None = None
    shards: int | None = None
    manifest_key: str | None = None
    wall_s: float | None = None
    error: str | None = None
    updated_at: datetime

    @classmethod
    def of(cls, row: Tokenization) -> TokenizationView:
        return cls.model_validate(row, from_attributes=True)


class DatasetView(View):
    id: str
    name: str
    key: str
    bytes: int
    characters: int | None = Field(default=None, description="Known once read whole (small uploads) or tokenized.")
    documents: int | None = Field(default=None, description="JSON Lines records or Parquet rows; 1 for text.")
    format: Literal["text", "jsonl", "parquet"] = "text"
    compression: Literal["none", "gzip"] = "none"
    preview: str
    sha256: str | None = None
    created_at: datetime | None = None
    status: Literal["stored", "recorded"] = Field(
        default="recorded", description="`stored`: uploaded, not yet in listings (no projector running)."
    )
    reused: bool = Field(default=False, description="The same file was uploaded before: this is that upload.")
    tokenizations: list[TokenizationView] | None = Field(default=None, description="In a dataset's own page.")

    @classmethod
    def of(cls, row: Dataset, tokenizations: list[Tokenization] | None = None) -> DatasetView:
        return cls(id=row.id, name=row.name, key=row.key, bytes=row.bytes, characters=row.characters,
                   documents=row.documents, format=row.format or "text", compression=row.compression or "none",
                   preview=row.preview, sha256=row.sha256, created_at=row.created_at,
                   tokenizations=None if tokenizations is None else [TokenizationView.of(t) for t in tokenizations])


class PartView(View):
    number: int
    bytes: int
    sha256: str


class UploadView(View):
    """An upload session: what it expects, what has arrived, what is missing."""

    upload_id: str
    name: str
    format: str
    compression: str
    text_column: str
    size: int
    part_bytes: int
    parts: int
    received: list[PartView]
    bytes_received: int
    missing: list[int] = Field(description="The first 1000 part numbers still to send.")
    missing_count: int
    dataset_id: str = Field(description="The dataset's id once the upload completes.")
    parts_url: str


class DeletedDataset(View):
    dataset_id: str
    status: Literal["deleted"] = "deleted"
    job_id: str


class DatasetList(View):
    items: list[DatasetView]
    total: int
    limit: int
    offset: int


class Submitted(View):
    """A command was published. `status` is the job's, or `submitted` when no agent has accepted it yet."""

    job_id: str
    model_id: str | None = None
    status: str
    events_url: str
    job_url: str

    @classmethod
    def of(cls, job_id: str, model_id: str | None, job: Job | None) -> Submitted:
        return cls(job_id=job_id, model_id=model_id, status=job.status if job is not None else "submitted",
                   events_url=f"{API}/jobs/{job_id}/events", job_url=f"{API}/jobs/{job_id}")


class CheckpointView(View):
    key: str
    step: int
    sha256: str
    bytes: int
    is_best: bool
    created_at: datetime | None = None

    @classmethod
    def of(cls, row: Checkpoint) -> CheckpointView:
        return cls(key=row.key, step=row.step, sha256=row.sha256, bytes=row.bytes, is_best=row.is_best,
                   created_at=row.created_at)


class EvaluationView(View):
    job_id: str
    model_id: str
    report: dict[str, Any]
    report_key: str
    created_at: datetime | None = None

    @classmethod
    def of(cls, row: Evaluation) -> EvaluationView:
        return cls(job_id=row.id, model_id=row.model_id, report=row.report, report_key=row.report_key,
                   created_at=row.created_at)


class ServingCheckpoint(View):
    """The checkpoint a version generates, evaluates and exports with: its choice (`serve`) of the best by validation
    loss or the last, the other when the chosen one is not there yet."""

    key: str
    step: int | None = None
    kind: Literal["best", "latest"]

    @classmethod
    def of(cls, row: Model) -> ServingCheckpoint | None:
        if not (row.best_checkpoint or row.latest_checkpoint):
            return None
        key = serving_checkpoint(row)
        if key == row.best_checkpoint:
            return cls(key=key, step=row.best_step, kind="best")
        return cls(key=key, step=step_of(key), kind="latest")


class ModelView(View):
    id: str
    name: str
    version: int | None = Field(default=None, description="This version's number among its name's: 1, 2, 3 ...")
    ref: str = Field(description="How to name exactly this version: `name/version`.")
    parent_id: str | None = Field(default=None, description="The version this one continued training from.")
    aliases: list[str] = Field(default_factory=list, description="The aliases (`name@alias`) pointing at it.")
    serve: Literal["best", "last"] = Field(default="best", description="Which checkpoint serves: best or last.")
    description: str
    status: str = Field(description="pending, training, completed, failed, cancelled or deleted.")
    progress: float
    step: int
    max_iters: int | None = None
    tokenizer: str | None = None
    hyperparameters: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    num_parameters: int | None = None
    vocab_size: int | None = None
    dataset_key: str | None = None
    latest_checkpoint: str | None = None
    best_checkpoint: str | None = None
    serving_checkpoint: ServingCheckpoint | None = Field(
        default=None, description="What generation and evaluation use; null until the first checkpoint.")
    train_job_id: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    trained_at: datetime | None = None

    @classmethod
    def of(cls, row: Model, aliases: list[str] | None = None) -> ModelView:
        return cls(
            id=row.id, name=row.name, version=row.version, ref=f"{row.name}/{row.version}" if row.version else row.id,
            parent_id=row.parent_id, aliases=aliases or [], serve="last" if row.serve == "last" else "best",
            description=row.description or "", status=row.status,
            progress=row.progress or 0.0, step=row.step or 0, max_iters=row.max_iters, tokenizer=row.tokenizer,
            hyperparameters=row.hyperparameters or {}, config=row.config or {}, metrics=row.metrics or {},
            num_parameters=row.num_parameters, vocab_size=row.vocab_size, dataset_key=row.dataset_key,
            latest_checkpoint=row.latest_checkpoint, best_checkpoint=row.best_checkpoint,
            serving_checkpoint=ServingCheckpoint.of(row), train_job_id=row.train_job_id, error=row.error,
            created_at=row.created_at, updated_at=row.updated_at, trained_at=row.trained_at,
        )


class ModelDetail(ModelView):
    checkpoints: list[CheckpointView]
    latest_evaluation: EvaluationView | None = None


class ModelList(View):
    items: list[ModelView]
    total: int
    limit: int
    offset: int


class ModelStatusView(View):
    model_id: str
    name: str
    status: str
    progress: float
    step: int
    max_iters: int | None = None
    loss: float | None = None
    val_loss: float | None = None
    eta_s: float | None = None
    job_id: str | None = None
    error: str | None = None


class DeletedModel(View):
    model_id: str
    status: Literal["deleted"] = "deleted"
    job_id: str


class QueuePlace(View):
    ahead: int = Field(description="Queued jobs that should start before it: its owner's older ones, and of each "
                                   "other owner's as many as the turns it waits (the queue takes owners in turn).")
    running: int = Field(description="Jobs running now (each worker runs LFZ_WORKER_MAX_JOBS at once).")


class PruneResult(View):
    pruned: int


class JobView(View):
    id: str
    kind: str
    status: str = Field(description="accepted, running, completed, failed or cancelled.")
    model_id: str | None = None
    model_name: str | None = None
    progress: float
    step: int | None = None
    max_iters: int | None = None
    loss: float | None = None
    val_loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    attempt: int
    worker: str | None = None
    error: str | None = None
    error_field: str | None = None
    result: dict[str, Any]
    last_seq: int
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    events_url: str
    queue: QueuePlace | None = Field(default=None, description="While it waits for a worker: its place.")

    @classmethod
    def of(cls, row: Job) -> JobView:
        return cls(
            id=row.id, kind=row.kind, status=row.status, model_id=row.model_id, model_name=row.model_name,
            progress=row.progress or 0.0, step=row.step, max_iters=row.max_iters, loss=row.loss,
            val_loss=row.val_loss, tokens_per_s=row.tokens_per_s, eta_s=row.eta_s, attempt=row.attempt or 0,
            worker=row.worker, error=row.error, error_field=row.error_field, result=row.result or {},
            last_seq=row.last_seq or 0, created_at=row.created_at, started_at=row.started_at,
            finished_at=row.finished_at, updated_at=row.updated_at, events_url=f"{API}/jobs/{row.id}/events",
        )


class JobList(View):
    items: list[JobView]
    total: int
    limit: int
    offset: int


class Cancelling(View):
    job_id: str
    status: Literal["cancelling"] = "cancelling"


class EvaluationResult(View):
    job_id: str
    model_id: str
    status: Literal["completed", "failed"]
    report: dict[str, Any] | None = None
    error: ErrorDetail | None = None


class CompletionView(View):
    index: int
    text: str
    completion_tokens: int
    finish_reason: str


class GenerationResult(View):
    request_id: str
    model_id: str
    text: str = Field(description="The first completion.")
    texts: list[str]
    completions: list[CompletionView]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    ttft_ms: float | None = None
    total_ms: float
    tokens_per_s: float | None = None
    warnings: list[str] = Field(default_factory=list, description="E.g. prompt characters the model never saw.")


class PresetView(View):
    name: str
    about: str
    values: dict[str, Any]


class HyperparameterView(View):
    name: str
    group: Literal["model", "train"]
    type: str
    default: Any
    help: str
    bounds: str | None = None
    choices: list[str] | None = None
    aliases: list[str] = Field(default_factory=list)


class Presets(View):
    default: str
    presets: list[PresetView]
    hyperparameters: list[HyperparameterView]
    tokenizers: dict[str, dict[str, dict[str, int]]] = Field(description="Each tokenizer's options: default, min.")


class ComponentState(View):
    status: Literal["ok", "down"]
    detail: str | None = None


class Health(View):
    status: Literal["ok", "down"]
    components: dict[str, ComponentState]
    error: ErrorDetail | None = None


class ExportFileView(View):
    name: str
    bytes: int
    url: str


class ExportView(View):
    """A finished export: what was written and where to download each file."""

    job_id: str
    model_id: str | None = None
    format: str
    dtype: str
    architecture: str
    step: int
    files: list[ExportFileView]

    @classmethod
    def of(cls, row: Job) -> ExportView:
        result = row.result or {}
        files = [ExportFileView(name=f["name"], bytes=f["bytes"], url=f"{API}/exports/{row.id}/files/{f['name']}")
                 for f in result.get("files", [])]
        return cls(job_id=row.id, model_id=row.model_id, format=result["format"], dtype=result["dtype"],
                   architecture=result["architecture"], step=result["step"], files=files)
