"""Facts: what happened to a job, in the past tense. All of them travel on the job-events topic, keyed by job id.

Every fact carries the job id, a per-job sequence number that increases by one, a unique event id, a time and the
identity of the process that produced it; the payload fields follow. A job's facts, in sequence order, are its log:
replaying them rebuilds every table the system keeps.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from events.datasets import (
    DatasetDeleted,
    DatasetTokenized,
    DatasetUploaded,
    TokenizeCompleted,
    TokenizeFailed,
    TokenizeProgress,
)
from events.fields import AliasName, Identifier, Message, new_id, utc_now
from events.job import FailureFields, JobEvent
from events.sweeps import EarlyStopping, SweepTrial, TrialResult

# -- every job ------------------------------------------------------------------------------------------------------


class JobAccepted(JobEvent):
    type: Literal["JobAccepted"] = "JobAccepted"
    model_id: Identifier | None = None
    model_name: str | None = None
    description: str = ""
    dataset_key: str | None = None
    tokenizer: str | None = None
    tokenizer_options: dict[str, int] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="As requested.")
    resume: bool = False
    parent_id: Identifier | None = Field(default=None, description="The version a train run continues.")
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, description=(
        "The number of the model version a train or import job makes, among its name's."))
    request: dict[str, Any] = Field(default_factory=dict, description="The command, for evaluate and generate jobs.")


class JobCancelled(JobEvent):
    type: Literal["JobCancelled"] = "JobCancelled"
    reason: str = "cancelled by request"
    step: int | None = None


# -- training -------------------------------------------------------------------------------------------------------


class TrainStarted(JobEvent):
    type: Literal["TrainStarted"] = "TrainStarted"
    model_id: Identifier
    attempt: int = Field(default=1, ge=1)
    worker: str
    resumed_from_step: int = 0
    max_iters: int
    num_parameters: int
    device: str
    config: dict[str, Any] = Field(default_factory=dict, description="Resolved model and training configuration.")
    tokenizer_key: str | None = None
    vocab_size: int | None = None
    world_size: int = Field(default=1, ge=1, description="Training processes (DDP ranks); tokens/s is their sum.")
    ranks: list[str] = Field(default_factory=list, description="Each rank's host and device, `host/cpu` or "
                                                                "`host/cuda:1`, in rank order.")


class TrainRendezvous(JobEvent):
    """A job of several hosts waits for them: the first worker hosts the c10d rendezvous at `endpoint` (its id the job
    id) and offers the job to `hosts - 1` other workers, which join it with `processes` ranks each."""

    type: Literal["TrainRendezvous"] = "TrainRendezvous"
    attempt: int = Field(ge=1)
    worker: str
    endpoint: str = Field(description="host:port of the rendezvous store.")
    hosts: int = Field(ge=2)
    processes: int = Field(ge=1, description="Ranks per host.")
    join_timeout_s: float = Field(description="The job fails when the hosts have not all joined by then.")


class TrainProgress(JobEvent):
    type: Literal["TrainProgress"] = "TrainProgress"
    step: int
    max_iters: int
    loss: float
    learning_rate: float
    tokens_per_s: float
    elapsed_s: float
    eta_s: float | None = None
    progress: float = Field(ge=0.0, le=1.0)
    warning: str | None = Field(default=None, description="On a run's first progress: it will take over an hour.")


class ValidationCompleted(JobEvent):
    type: Literal["ValidationCompleted"] = "ValidationCompleted"
    step: int
    val_loss: float
    best_val_loss: float


class CheckpointSaved(JobEvent):
    type: Literal["CheckpointSaved"] = "CheckpointSaved"
    model_id: Identifier
    step: int
    key: str
    sha256: str
    bytes: int
    is_best: bool = False
    best_key: str | None = None
    pruned: list[str] = Field(default_factory=list, description="Older checkpoints deleted as this one was kept.")


class TrainCompleted(JobEvent):
    type: Literal["TrainCompleted"] = "TrainCompleted"
    model_id: Identifier
    final_step: int
    train_loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    perplexity: float | None = None
    wall_s: float
    tokens_per_s: float | None = None
    num_parameters: int
    checkpoint_key: str
    best_checkpoint_key: str | None = None
    stopped_early: bool = False


class TrainFailed(FailureFields, JobEvent):
    type: Literal["TrainFailed"] = "TrainFailed"
    model_id: Identifier | None = None
    step: int | None = None


# -- evaluation -----------------------------------------------------------------------------------------------------


class EvaluationCompleted(JobEvent):
    type: Literal["EvaluationCompleted"] = "EvaluationCompleted"
    model_id: Identifier
    report: dict[str, Any]
    report_key: str


class EvaluationFailed(FailureFields, JobEvent):
    type: Literal["EvaluationFailed"] = "EvaluationFailed"
    model_id: Identifier | None = None


# -- export ---------------------------------------------------------------------------------------------------------


class ExportedFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    key: str = Field(description="Where the object store holds it.")
    bytes: int = Field(ge=0)


class ExportCompleted(JobEvent):
    type: Literal["ExportCompleted"] = "ExportCompleted"
    model_id: Identifier
    format: str
    dtype: str
    architecture: str = Field(description="What loads it: e.g. GPT2LMHeadModel, GPTNeoXForCausalLM, gguf:gpt2.")
    step: int
    checkpoint_key: str
    files: list[ExportedFile]


class ExportFailed(FailureFields, JobEvent):
    type: Literal["ExportFailed"] = "ExportFailed"
    model_id: Identifier | None = None


class ModelImported(JobEvent):
    """The imported model is registered and serves from `checkpoint_key` (step 0)."""

    type: Literal["ModelImported"] = "ModelImported"
    model_id: Identifier
    architecture: str
    config: dict[str, Any]
    num_parameters: int
    vocab_size: int
    tokenizer: str = Field(description="The tokenizer's kind: char, word or bpe.")
    tokenizer_key: str
    checkpoint_key: str


class ImportFailed(FailureFields, JobEvent):
    type: Literal["ImportFailed"] = "ImportFailed"
    model_id: Identifier | None = None


# -- generation -----------------------------------------------------------------------------------------------------


class TokensGenerated(JobEvent):
    type: Literal["TokensGenerated"] = "TokensGenerated"
    sequence: int = Field(default=0, ge=0, description="Which of the `num_sequences` samples.")
    index: int = Field(ge=0, description="Position of the first of these tokens in the completion.")
    token_ids: list[int]
    text: str


class Completion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int
    text: str
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


class GenerationCompleted(JobEvent):
    type: Literal["GenerationCompleted"] = "GenerationCompleted"
    model_id: Identifier
    completions: list[Completion]
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None = None
    total_ms: float
    tokens_per_s: float | None = None
    warnings: list[str] = Field(default_factory=list, description="What the caller should know, e.g. that the "
                                                                   "prompt holds characters the model never saw.")


class GenerationFailed(FailureFields, JobEvent):
    type: Literal["GenerationFailed"] = "GenerationFailed"
    model_id: Identifier | None = None


# -- datasets and models --------------------------------------------------------------------------------------------


class JobsPruned(JobEvent):
    """Finished jobs of one owner taken out of the listings, with their facts in the database's copy of the log (the
    topic keeps them)."""

    type: Literal["JobsPruned"] = "JobsPruned"
    job_ids: list[Identifier] = Field(max_length=1000)


class ModelDeleted(JobEvent):
    type: Literal["ModelDeleted"] = "ModelDeleted"
    model_id: Identifier


# -- the registry: aliases of a name's versions, and which checkpoint of a version serves ----------------------------


class ModelAliasSet(JobEvent):
    """`name@alias` now means this version (wherever it pointed before)."""

    type: Literal["ModelAliasSet"] = "ModelAliasSet"
    name: str = Field(max_length=100)
    alias: AliasName
    model_id: Identifier
    version: int = Field(ge=1, le=2**31 - 1)


class ModelAliasRemoved(JobEvent):
    type: Literal["ModelAliasRemoved"] = "ModelAliasRemoved"
    name: str = Field(max_length=100)
    alias: AliasName


class ServingCheckpointChosen(JobEvent):
    """Which checkpoint of a version generates, evaluates and exports: the best by validation loss, or the last."""

    type: Literal["ServingCheckpointChosen"] = "ServingCheckpointChosen"
    model_id: Identifier
    checkpoint: Literal["best", "last"]


# -- sweeps: many trials (training jobs) of one search, and the best of them --------------------------------------


class SweepStarted(JobEvent):
    """The trials, drawn from the search space; their training requests are sent with it."""

    type: Literal["SweepStarted"] = "SweepStarted"
    model_name: str
    metric: str
    method: str
    early_stopping: EarlyStopping
    alias: str | None = None
    trials: list[SweepTrial] = Field(max_length=100)


class SweepTrialStopped(JobEvent):
    """A trial cancelled by the early-stopping rule: at `step` its metric was `value`, worse than its peers'."""

    type: Literal["SweepTrialStopped"] = "SweepTrialStopped"
    index: int
    trial_job_id: str
    step: int
    value: float
    reason: str


class SweepProgress(JobEvent):
    """Whenever a trial ends, or the best trial so far changes."""

    type: Literal["SweepProgress"] = "SweepProgress"
    finished: int
    running: int
    stopped: int
    failed: int
    total: int
    best: TrialResult | None = None


class SweepCompleted(JobEvent):
    type: Literal["SweepCompleted"] = "SweepCompleted"
    best: TrialResult | None = Field(description="The trial with the lowest metric; null when no trial completed.")
    alias: str | None = Field(default=None, description="Given to the best trial's version.")
    completed: int
    stopped: int
    failed: int
    total: int
    wall_s: float
    steps_run: int = Field(description="Training steps all trials ran.")
    steps_planned: int = Field(description="What they would have run without early stopping.")


class SweepFailed(FailureFields, JobEvent):
    type: Literal["SweepFailed"] = "SweepFailed"


FACTS: dict[str, type[JobEvent]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        JobAccepted,
        JobCancelled,
        TrainStarted,
        TrainRendezvous,
        TrainProgress,
        ValidationCompleted,
        CheckpointSaved,
        TrainCompleted,
        TrainFailed,
        EvaluationCompleted,
        EvaluationFailed,
        ExportCompleted,
        ExportFailed,
        ModelImported,
        ImportFailed,
        TokensGenerated,
        GenerationCompleted,
        GenerationFailed,
        DatasetUploaded,
        DatasetDeleted,
        TokenizeProgress,
        DatasetTokenized,
        TokenizeCompleted,
        TokenizeFailed,
        JobsPruned,
        ModelDeleted,
        ModelAliasSet,
        ModelAliasRemoved,
        ServingCheckpointChosen,
        SweepStarted,
        SweepTrialStopped,
        SweepProgress,
        SweepCompleted,
        SweepFailed,
    )
}

FAILED_TYPE_FOR_KIND: dict[str, type[JobEvent]] = {
    "train": TrainFailed,
    "evaluate": EvaluationFailed,
    "generate": GenerationFailed,
    "export": ExportFailed,
    "import": ImportFailed,
    "sweep": SweepFailed,
    "tokenize": TokenizeFailed,
}


class DeadLetter(Message):
    """A message that could not be decoded or validated, kept with the reason and where it came from."""

    type: Literal["DeadLetter"] = "DeadLetter"
    event_id: str = Field(default_factory=new_id)
    time: AwareDatetime = Field(default_factory=utc_now)
    producer: str
    topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    error: str
    field: str | None = None
    job_id: str | None = None
    payload_text: str | None = Field(default=None, description="The message, when it was UTF-8 (cut at 64 KiB).")
    payload_base64: str | None = Field(default=None, description="The message, when it was not UTF-8.")
