"""The control agent: CancelRequested. A queued job ends at once; a running one is flagged in the queue, and its
worker (which checks the flag every second with its lease) stops the child process and publishes JobCancelled.
A cancel that states an owner stops only that owner's jobs; one without (auth off) may stop any."""

from __future__ import annotations

import logging

import faust

from agents.intake import Refused, command_agent
from agents.jobs.queue import JobQueue
from agents.jobs.scheduler import Scheduler
from agents.runtime import Runtime
from events import CancelRequested, JobCancelled
from infra.publisher import JobLog

log = logging.getLogger(__name__)


def register(app: faust.App, runtime: Runtime, scheduler: Scheduler) -> None:
    command_agent(app, runtime, runtime.topics.job_control, CancelRequested, "control",
                  lambda command: cancel(runtime, scheduler.queue, command), then=scheduler.kick)


async def cancel(runtime: Runtime, queue: JobQueue, command: CancelRequested) -> None:
    job = await queue.get(command.job_id)
    if job is not None and job.kind != "unknown" and command.owner is not None and job.owner != command.owner:
        # Answered as for a job that does not exist, as the gateway does: another tenant's job is not there.
        raise Refused(f"job_id: no job {command.job_id} of this owner to cancel", "job_id")
    state = await queue.request_cancel(command.job_id, command.reason)
    log.info("cancel of %s requested (state %s)", command.job_id, state)
    if state != "queued":
        return  # running: its worker stops it; done or unknown: nothing to do now
    claim = await queue.cancel_queued(command.job_id)
    if claim is None:
        return  # it started meanwhile: the flag reaches its worker
    job = JobLog(runtime.publisher, job_id=claim.job_id, kind=claim.kind, owner=claim.owner,
                 last_seq=claim.last_seq)
    await job.emit(JobCancelled, event_id=f"{claim.job_id}-cancelled", reason=command.reason, step=0, wait=True)
    await queue.set_seq(claim.job_id, job.last_seq)
