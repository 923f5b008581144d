"""The kinds of job that run in a child process: for each, the typed spec its jobs are given and the code that runs one.

An intake agent checks a command and turns it into a spec (a `JobSpec` of its kind), which the queue keeps as JSON;
the worker that claims the job parses it back with the same class and hands it to the kind's code in a spawned child
process. The train and evaluate features declare their kinds; the machinery of this package knows them only through
the table that app.py builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from agents.jobs.child import JobCode
from events import FAILED_TYPE_FOR_KIND, JobEvent


class JobSpec(BaseModel):
    """What every job's spec says: whose job it is and which model it is about."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    model_id: str
    owner: str | None = None


@dataclass(frozen=True)
class JobKind:
    name: str  # the queue's `kind`: "train", "evaluate"
    spec: type[JobSpec]
    code: JobCode  # runs in the child process
    # A helper kind lends a worker's processes to a job of the kind it names (a host joining a training job of
    # several): its rows are offered by that job's run, and it publishes no fact of its own.
    helps: str | None = None

    @property
    def failed(self) -> type[JobEvent]:
        """The fact that ends a job of this kind that failed."""
        return FAILED_TYPE_FOR_KIND[self.helps or self.name]

    def parse(self, spec: dict[str, Any]) -> JobSpec:
        return self.spec.model_validate(spec)


def helper_id(job_id: str, attempt: int, index: int) -> str:
    """The queue's id of a helper of a job's run (`attempt`): `<job>+<attempt>.<index>`."""
    return f"{helpers_of(job_id)}{attempt}.{index}"


def helpers_of(job_id: str) -> str:
    """What the queue ids of a job's helpers begin with."""
    return f"{job_id}+"


def helped_job(job_id: str) -> str:
    """The job a queue id belongs to: the id itself, or the job a helper's id names."""
    return job_id.split("+", 1)[0]
