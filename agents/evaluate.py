"""The evaluate agent: checks an EvaluateRequested and queues the evaluation, which runs in a child process."""

from __future__ import annotations

import faust

from agents import artifacts
from agents.datasets import readable_dataset
from agents.intake import command_agent
from agents.models import ModelUnavailable, serving_checkpoint, wait_for_trained_model
from agents.publisher import JobLog
from agents.runtime import Runtime
from agents.scheduler import Scheduler
from events import EvaluateRequested, EvaluationFailed, JobAccepted


def register(app: faust.App, runtime: Runtime, scheduler: Scheduler) -> None:
    command_agent(app, runtime, runtime.topics.evaluate_requested, EvaluateRequested, "evaluate",
                  lambda command: accept(runtime, command), then=scheduler.kick)

async def accept(runtime: Runtime, command: EvaluateRequested) -> None:
    job = JobLog(runtime.publisher, job_id=command.job_id, kind="evaluate", owner=command.owner,
                 producer=runtime.producer_name)
    request = command.model_dump(mode="json", exclude={"held_out"})

    async def reject(model_id: str | None, model_name: str | None, reason: str, field: str) -> None:
        await job.emit(JobAccepted, event_id=f"{command.job_id}-accepted", model_id=model_id, model_name=model_name,
                       request=request)
        await job.emit(EvaluationFailed, event_id=f"{command.job_id}-rejected", model_id=model_id, reason=reason,
                       field=field)

    try:
        model = await wait_for_trained_model(runtime.sessions, command.owner, command.model_id, command.model_name)
    except ModelUnavailable as error:
        await reject(command.model_id, command.model_name, error.reason, error.field)
        return
    held_out_key = None
    if command.held_out is not None and command.held_out.text is not None:
        if not command.held_out.text.strip():
            await reject(model.id, model.name, "held_out.text: the held-out text is empty", "held_out.text")
            return
        held_out_key = f"datasets/{command.job_id}-held-out"
        await runtime.astore.put_bytes(held_out_key, command.held_out.text.encode(), "text/plain; charset=utf-8")
    elif command.held_out is not None:
        held_out_key = command.held_out.key
        assert held_out_key is not None
        # The same answer as for a key that does not exist: another tenant's dataset is not there for this one.
        if not await readable_dataset(runtime.sessions, command.owner, held_out_key):
            await reject(model.id, model.name, f"held_out.key: no dataset at {held_out_key}", "held_out.key")
            return
    spec = dict(
        job_id=command.job_id, model_id=model.id, owner=command.owner, checkpoint_key=serving_checkpoint(model),
        held_out_key=held_out_key, training_dataset_key=model.dataset_key, prompts=command.prompts,
        max_new_tokens=command.max_new_tokens, seed=command.seed, report_key=artifacts.evaluation_key(command.job_id),
    )
    if await runtime.queue.enqueue(command.job_id, "evaluate", command.owner, spec) is None:
        row = await runtime.queue.get(command.job_id)
        if row is None or row.last_seq > 1:
            return
    await job.emit(JobAccepted, event_id=f"{command.job_id}-accepted", model_id=model.id, model_name=model.name,
                   request=request)
