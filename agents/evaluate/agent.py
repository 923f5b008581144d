"""The evaluate agent: checks an EvaluateRequested and queues the evaluation, which runs in a child process."""

from __future__ import annotations

import faust

from agents.evaluate.job import EvaluateSpec
from agents.intake import command_agent, refuse_a_taken_job_id
from agents.jobs.queue import JobQueue
from agents.jobs.scheduler import Scheduler
from agents.runtime import Runtime
from agents.tokenize.agent import dataset_source
from events import EvaluateRequested, EvaluationFailed, JobAccepted, Rejected
from infra.db import queries
from infra.objectstore import artifacts
from infra.publisher import JobLog


def register(app: faust.App, runtime: Runtime, scheduler: Scheduler) -> None:
    command_agent(app, runtime, runtime.topics.evaluate_requested, EvaluateRequested, "evaluate",
                  lambda command: accept(runtime, scheduler.queue, command), then=scheduler.kick)


async def accept(runtime: Runtime, queue: JobQueue, command: EvaluateRequested) -> None:
    await refuse_a_taken_job_id(runtime, command.job_id, "evaluate", command.owner)
    job = JobLog(runtime.publisher, job_id=command.job_id, kind="evaluate", owner=command.owner)
    request = command.model_dump(mode="json", exclude={"held_out"})

    async def reject(model_id: str | None, model_name: str | None, reason: str, field: str | None) -> None:
        await job.emit(JobAccepted, event_id=f"{command.job_id}-accepted", model_id=model_id, model_name=model_name,
                       request=request)
        await job.emit(EvaluationFailed, event_id=f"{command.job_id}-rejected", model_id=model_id, reason=reason,
                       field=field)

    try:
        model = await queries.servable_model_soon(runtime.sessions, command.owner, command.model_id,
                                                 command.model_name)
    except Rejected as error:
        await reject(command.model_id, command.model_name, error.reason, error.field)
        return
    held_out_key = None
    if command.held_out is not None and command.held_out.text is not None:
        if not command.held_out.text.strip():
            await reject(model.id, model.name, "held_out.text: the held-out text is empty", "held_out.text")
            return
        held_out_key = artifacts.dataset_key(f"{command.job_id}-held-out")
        await runtime.astore.put_bytes(held_out_key, command.held_out.text.encode(), "text/plain; charset=utf-8")
    elif command.held_out is not None:
        held_out_key = command.held_out.key
        assert held_out_key is not None
        # The same answer as for a key that does not exist: another tenant's dataset is not there for this one.
        readable = await queries.wait_for(runtime.sessions,
                                          lambda s: queries.dataset_readable(s, command.owner, held_out_key), 3.0, 0.2)
        if readable is None:
            await reject(model.id, model.name, f"held_out.key: no dataset at {held_out_key}", "held_out.key")
            return
    # By default the held-out text is the tail of the model's own training text: only when the sender may read it.
    training_key = model.dataset_key
    if held_out_key is None and training_key is not None:
        async with runtime.sessions() as session:
            training_key = training_key if await queries.dataset_readable(session, command.owner, training_key) \
                else None
    training_format = None
    if held_out_key is None and training_key is not None:  # how to read it: its format, compression, text column
        source = await dataset_source(runtime, command.owner, training_key)
        training_format = source.model_dump(include={"format", "compression", "text_column"})
    spec = EvaluateSpec(
        job_id=command.job_id, model_id=model.id, owner=command.owner,
        checkpoint_key=queries.serving_checkpoint(model), held_out_key=held_out_key,
        training_dataset_key=training_key, training_dataset_format=training_format, prompts=command.prompts,
        max_new_tokens=command.max_new_tokens,
        seed=command.seed, report_key=artifacts.evaluation_key(command.job_id),
    )
    if await queue.enqueue(command.job_id, "evaluate", command.owner, spec.model_dump(mode="json")) is None:
        row = await queue.get(command.job_id)
        if row is None or row.last_seq > 1:
            return
    await job.emit(JobAccepted, event_id=f"{command.job_id}-accepted", model_id=model.id, model_name=model.name,
                   request=request)
