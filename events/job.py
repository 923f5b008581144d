"""What every fact of a job is: its envelope (job id, sequence number, event id, time, producer, owner, kind), and
which facts end a job."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from events.fields import Identifier, Message, new_id, utc_now

JobKind = Literal["train", "evaluate", "generate", "export", "import", "sweep", "tokenize", "dataset",
                  "delete", "registry"]
JOB_KINDS = ("train", "evaluate", "generate", "export", "import", "sweep", "tokenize")  # the jobs a person asked for
QUEUED_KINDS = ("train", "evaluate", "export", "import", "tokenize")  # the kinds that run in a worker's child process


class JobEvent(Message):
    event_id: str = Field(default_factory=new_id)
    job_id: Identifier
    seq: int = Field(ge=1, description="Position in the job's log: 1, 2, 3, ...")
    time: AwareDatetime = Field(default_factory=utc_now)
    producer: str = Field(description="The process that produced it, e.g. `agents/host-1234`.")
    owner: str | None = None
    kind: JobKind

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES  # type: ignore[attr-defined]


class FailureFields(Message):
    """Mixed into the failure facts: a reason a person can act on, and the field at fault when there is one."""

    reason: str
    field: str | None = None


TERMINAL_TYPES = frozenset(
    {
        "TrainCompleted",
        "TrainFailed",
        "JobCancelled",
        "EvaluationCompleted",
        "EvaluationFailed",
        "ExportCompleted",
        "ExportFailed",
        "ModelImported",
        "ImportFailed",
        "GenerationCompleted",
        "GenerationFailed",
        "DatasetUploaded",
        "DatasetDeleted",
        "TokenizeCompleted",
        "TokenizeFailed",
        "JobsPruned",
        "ModelDeleted",
        "ModelAliasSet",
        "ModelAliasRemoved",
        "ServingCheckpointChosen",
        "SweepCompleted",
        "SweepFailed",
    }
)
