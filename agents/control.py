"""The control agent: CancelRequested. A queued job ends at once; a running one is flagged in the queue, and its
worker (which checks the flag every second with its lease) stops the child process and publishes JobCancelled."""

from __future__ import annotations

import logging

import faust

from agents.intake import command_agent
from agents.publisher import JobLog
from agents.runtime import Runtime
from agents.scheduler import Scheduler
from events import CancelRequested, JobCancelled

log = logging.getLogger(__name__)


def register(app: faust.App, runtime: Runtime, scheduler: Scheduler) -> None:
    command_agent(app, runtime, runtime.topics.job_control, CancelRequested, "control",
                  lambda command: cancel(runtime, command), then=scheduler.kick)

async def cancel(runtime: Runtime, command: CancelRequested) -> None:
    state = await runtime.queue.request_cancel(command.job_id, command.reason)
    log.info("cancel of %s requested (state %s)", command.job_id, state)
    if state != "queued":
        return  # running: its worker stops it; done or unknown: nothing to do now
    claim = await runtime.queue.cancel_queued(command.job_id)
    if claim is None:
        return  # it started meanwhile: the flag reaches its worker
    job = JobLog(runtime.publisher, job_id=claim.job_id, kind=claim.kind, owner=claim.owner,
                 producer=runtime.producer_name, last_seq=claim.last_seq)
    await job.emit(JobCancelled, event_id=f"{claim.job_id}-cancelled", reason=command.reason, step=0, wait=True)
    await runtime.queue.set_seq(claim.job_id, job.last_seq)
