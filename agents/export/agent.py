"""The export agent: checks an ExportRequested (the model, the checkpoint, the format) and queues the export, which
runs in a child process."""

from __future__ import annotations

import faust

from agents.export.job import ExportSpec
from agents.intake import command_agent, refuse_a_taken_job_id
from agents.jobs.queue import JobQueue
from agents.jobs.scheduler import Scheduler
from agents.runtime import Runtime
from events import ExportFailed, ExportRequested, JobAccepted, Rejected
from infra.db import queries
from infra.publisher import JobLog


def register(app: faust.App, runtime: Runtime, scheduler: Scheduler) -> None:
    command_agent(app, runtime, runtime.topics.export_requested, ExportRequested, "export",
                  lambda command: accept(runtime, scheduler.queue, command), then=scheduler.kick)


async def accept(runtime: Runtime, queue: JobQueue, command: ExportRequested) -> None:
    await refuse_a_taken_job_id(runtime, command.job_id, "export", command.owner)
    job = JobLog(runtime.publisher, job_id=command.job_id, kind="export", owner=command.owner)
    request = command.model_dump(mode="json")
    try:
        model = await queries.servable_model_soon(runtime.sessions, command.owner, command.model_id,
                                                 command.model_name)
        checkpoint_key = queries.serving_checkpoint(model)
        if command.step is not None:
            async with runtime.sessions() as session:
                saved = {c.step: c.key for c in await queries.checkpoints(session, model.id)}
            if command.step not in saved:
                steps = ", ".join(str(step) for step in sorted(saved)) or "none"
                raise Rejected(f"step: the model has no checkpoint at step {command.step} (saved: {steps})", "step")
            checkpoint_key = saved[command.step]
    except Rejected as error:
        await job.emit(JobAccepted, event_id=f"{command.job_id}-accepted", model_id=command.model_id,
                       model_name=command.model_name, request=request)
        await job.emit(ExportFailed, event_id=f"{command.job_id}-rejected", model_id=command.model_id,
                       reason=error.reason, field=error.field)
        return
    spec = ExportSpec(job_id=command.job_id, model_id=model.id, owner=command.owner, checkpoint_key=checkpoint_key,
                      format=command.format, dtype=command.dtype)
    if await queue.enqueue(command.job_id, "export", command.owner, spec.model_dump(mode="json")) is None:
        row = await queue.get(command.job_id)
        if row is None or row.last_seq > 1:
            return
    await job.emit(JobAccepted, event_id=f"{command.job_id}-accepted", model_id=model.id, model_name=model.name,
                   request=request)
