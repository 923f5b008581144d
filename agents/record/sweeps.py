"""The sweeps' part of the projection: a sweep is a job (kind `sweep`) whose `result` holds its trials, the ones
early stopping cancelled, its progress and its best trial; the trials are training jobs of their own."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from events import SweepCompleted, SweepProgress, SweepStarted, SweepTrialStopped
from events.job import JobEvent
from infra.db.tables import Job


async def _job(session: AsyncSession, event: JobEvent) -> Job | None:
    job = await session.get(Job, event.job_id)
    return job if job is not None and job.kind == "sweep" else None


async def on_started(session: AsyncSession, event: SweepStarted) -> None:
    job = await _job(session, event)
    if job is None:
        return
    job.status = "running" if job.status == "accepted" else job.status
    job.started_at = job.started_at or event.time
    job.result = {**(job.result or {}), **event.model_dump(
        mode="json", include={"metric", "method", "early_stopping", "alias", "trials"})}


async def on_trial_stopped(session: AsyncSession, event: SweepTrialStopped) -> None:
    job = await _job(session, event)
    if job is None:
        return
    stopped = [s for s in (job.result or {}).get("stopped", []) if s["index"] != event.index]
    stopped.append(event.model_dump(mode="json", include={"index", "trial_job_id", "step", "value", "reason"}))
    job.result = {**(job.result or {}), "stopped": sorted(stopped, key=lambda s: s["index"])}


async def on_progress(session: AsyncSession, event: SweepProgress) -> None:
    job = await _job(session, event)
    if job is None or job.status in ("completed", "failed", "cancelled"):
        return
    job.status = "running"
    job.progress = event.finished / event.total if event.total else 0.0
    counts = event.model_dump(mode="json", include={"finished", "running", "stopped", "failed", "total"})
    job.result = {**(job.result or {}), "progress": counts, "best": event.model_dump(mode="json")["best"]}


async def on_completed(session: AsyncSession, event: SweepCompleted) -> None:
    job = await _job(session, event)
    if job is None:
        return
    job.status, job.finished_at, job.eta_s, job.progress = "completed", event.time, None, 1.0
    summary = event.model_dump(mode="json", include={"alias", "completed", "stopped", "failed", "total", "wall_s",
                                                     "steps_run", "steps_planned"})
    job.result = {**(job.result or {}), "best": event.model_dump(mode="json")["best"], "summary": summary}


HANDLERS = {
    SweepStarted: on_started,
    SweepTrialStopped: on_trial_stopped,
    SweepProgress: on_progress,
    SweepCompleted: on_completed,
}
