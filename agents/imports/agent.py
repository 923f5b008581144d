"""The import agent: checks an ImportRequested (a free model name, the uploaded files) and queues the import, which
runs in a child process. The new model's id derives from the job id, so a redelivered request names the same one."""

from __future__ import annotations

import faust

from agents.imports.job import ImportSpec
from agents.intake import allocate_version, command_agent, model_id_of_job, refuse_a_taken_job_id
from agents.jobs.queue import JobQueue
from agents.jobs.scheduler import Scheduler
from agents.runtime import Runtime
from events import ImportFailed, ImportRequested, JobAccepted
from events.commands import IMPORT_FILES as REQUIRED
from infra.db import queries
from infra.publisher import JobLog


def register(app: faust.App, runtime: Runtime, scheduler: Scheduler) -> None:
    command_agent(app, runtime, runtime.topics.import_requested, ImportRequested, "import",
                  lambda command: accept(runtime, scheduler.queue, command), then=scheduler.kick)


async def accept(runtime: Runtime, queue: JobQueue, command: ImportRequested) -> None:
    await refuse_a_taken_job_id(runtime, command.job_id, "import", command.owner)
    model_id = model_id_of_job(command.job_id)
    job = JobLog(runtime.publisher, job_id=command.job_id, kind="import", owner=command.owner)
    accepted = dict(event_id=f"{command.job_id}-accepted", model_id=model_id, model_name=command.model_name,
                    description=command.description, request=command.model_dump(mode="json"))
    existing = await queue.get(command.job_id)
    if existing is None:  # a first delivery: check it (a redelivery finds its own model under that name)
        missing = [name for name in REQUIRED if name not in command.files]
        async with runtime.sessions() as session:
            taken = await queries.model_named(session, command.owner, command.model_name)
        reason = field = None
        if missing:
            reason, field = f"files: {', '.join(missing)} missing; a model directory needs {', '.join(REQUIRED)}", \
                "files"
        elif taken is not None and taken.id != model_id:
            reason, field = f"model_name: a model named {command.model_name!r} exists already", "model_name"
        if reason is not None:
            await job.emit(JobAccepted, **{**accepted, "model_id": None})
            await job.emit(ImportFailed, event_id=f"{command.job_id}-rejected", reason=reason, field=field)
            return
    if existing is not None:  # delivered again: accepted as it was the first time
        if existing.last_seq <= 1:
            version = ImportSpec.model_validate(existing.spec).version if existing.kind == "import" else None
            await job.emit(JobAccepted, **{**accepted, "version": version})
        return
    spec = ImportSpec(job_id=command.job_id, model_id=model_id, owner=command.owner, files=command.files,
                      version=await allocate_version(runtime, command.owner, command.model_name))
    if await queue.enqueue(command.job_id, "import", command.owner, spec.model_dump(mode="json")) is None:
        return  # a twin delivery queued it a moment ago, and accepts it
    await job.emit(JobAccepted, **{**accepted, "version": spec.version})
