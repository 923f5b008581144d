"""The sweep agent: takes a SweepRequested, checks it (the dataset, the name, every trial's hyperparameters), stores
an inline text once as a dataset for all trials, and queues the sweep; whichever worker claims it coordinates it
(see `runner`)."""

from __future__ import annotations

import logging
from typing import Any

import faust

from agents.intake import command_agent, model_id_of_job, refuse_a_taken_job_id
from agents.jobs.queue import JobQueue
from agents.runtime import Runtime
from agents.sweeps.runner import SweepRunner, SweepSpec
from agents.train.agent import check_new_name, training_dataset
from events import JobAccepted, Rejected, SweepFailed, SweepRequested
from infra import search_space as space
from infra.publisher import JobLog

log = logging.getLogger(__name__)


def register(app: faust.App, runtime: Runtime, runner: SweepRunner) -> None:
    command_agent(app, runtime, runtime.topics.sweep_requested, SweepRequested, "sweep",
                  lambda command: accept(runtime, runner.queue, command), then=runner.kick)


async def accept(runtime: Runtime, queue: JobQueue, command: SweepRequested) -> None:
    job = JobLog(runtime.publisher, job_id=command.job_id, kind="sweep", owner=command.owner)
    request = command.model_dump(mode="json", exclude={"dataset", "owner", "requested_at", "type", "schema_version"})
    accepted: dict[str, Any] = dict(event_id=f"{command.job_id}-accepted", model_name=command.model_name,
                                    description=command.description, tokenizer=command.tokenizer,
                                    tokenizer_options=command.tokenizer_options,
                                    hyperparameters=command.hyperparameters, request=request)
    await refuse_a_taken_job_id(runtime, command.job_id, "sweep", command.owner)
    if await queue.get(command.job_id) is not None:  # delivered again
        row = await queue.get(command.job_id)
        if row is not None and row.last_seq <= 1:
            await job.emit(JobAccepted, **accepted)
        return
    try:
        spec = await _checked_spec(runtime, command)
    except Rejected as rejected:
        await job.emit(JobAccepted, **accepted)
        await job.emit(SweepFailed, event_id=f"{command.job_id}-rejected", reason=rejected.reason,
                       field=rejected.field)
        return
    if await queue.enqueue(command.job_id, "sweep", command.owner, spec.model_dump(mode="json")) is None:
        return  # a twin delivery queued it a moment ago, and accepts it
    await job.emit(JobAccepted, **{**accepted, "dataset_key": spec.dataset_key})


async def _checked_spec(runtime: Runtime, command: SweepRequested) -> SweepSpec:
    check_new_name(command.model_name)
    trials = space.trials(command, model_id_of_job)
    dataset_key = await training_dataset(runtime, command.owner, command.dataset, command.job_id,
                                         f"training text of the sweep {command.model_name}")
    return SweepSpec(job_id=command.job_id, owner=command.owner, request=command.model_dump(mode="json"),
                     dataset_key=dataset_key, trials=trials)
