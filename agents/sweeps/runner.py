"""The sweep runner of one worker: claims queued sweeps, takes over those whose worker stopped renewing the lease,
and coordinates each one it holds, once a second.

Coordinating is a pure reading of the tables (the trials' jobs, models and validation facts) followed by idempotent
acts: the trials' training requests (their job ids are fixed, so sending one twice queues it once), cancels of the
trials the early-stopping rule stops, the sweep's facts (`SweepStarted`, `SweepTrialStopped`, `SweepProgress`) and
its end (`SweepCompleted` through the queue's outbox, so that it ends once, and the best trial's alias). The sweep
needs no training slot: it runs in the worker's event loop, and its trials wait in the queue as any training job.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import and_, or_, select

from agents.jobs.queue import Claim, JobQueue
from agents.jobs.scheduler import LeaseWatch, tick_forever
from agents.runtime import Runtime
from agents.sweeps import stopping
from events import (
    CancelRequested,
    DatasetRef,
    JobCancelled,
    ModelAliasSet,
    SweepCompleted,
    SweepProgress,
    SweepRequested,
    SweepStarted,
    SweepTrialStopped,
    TrainRequested,
    decode_event,
    utc_now,
)
from events.sweeps import SweepTrial, TrialResult
from infra import search_space as space
from infra.db import DATABASE_DOWN
from infra.db.queries import last_recorded
from infra.db.tables import Job, JobEventRow, Model
from infra.publisher import JobLog

log = logging.getLogger(__name__)
ENDED = ("completed", "failed", "cancelled")
METRIC_FACT = {"val_loss": ("ValidationCompleted", "val_loss"), "train_loss": ("TrainProgress", "loss")}


class SweepSpec(BaseModel):
    """A sweep as the sweep agent accepted it: the request, its trials, and the dataset they all train on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    owner: str | None
    request: dict[str, Any]
    dataset_key: str
    trials: list[SweepTrial]

    @property
    def command(self) -> SweepRequested:
        return SweepRequested.model_validate(self.request)


@dataclass
class Trial:
    spec: SweepTrial
    status: str  # of its job: accepted, running, completed, failed, cancelled; "missing" before it is recorded
    step: int
    planned: int  # the steps it would run
    history: stopping.History
    version: int | None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def value(self) -> float | None:
        return min((v for _, v in self.history), default=None)


class Coordinator:
    """One sweep, while this worker holds its lease."""

    def __init__(self, runtime: Runtime, queue: JobQueue, claim: Claim):
        self.runtime, self.queue, self.claim = runtime, queue, claim
        self.spec = SweepSpec.model_validate(claim.spec)
        self.command = self.spec.command
        self.job = JobLog(runtime.publisher, job_id=claim.job_id, kind="sweep", owner=claim.owner,
                          last_seq=claim.last_seq)
        self.started = False
        self.reported: tuple[Any, ...] | None = None
        # Read once, then kept up to date here: the trials' metric histories (each trial's facts are recorded in
        # their order, so only those after the last one read are read again), and the trials stopped early.
        self.histories: dict[str, stopping.History] = {t.job_id: [] for t in self.spec.trials}
        self.read_up_to: dict[str, int] = {t.job_id: 0 for t in self.spec.trials}
        self.stopped: set[int] = set()

    async def step(self) -> bool:
        """One round; False once the sweep is no longer this worker's (ended, or its lease lost)."""
        if self.claim.outbox is not None:  # taken over while ending: only its end is left to publish
            await self._publish_end(self.claim.outbox)
            return False
        if not self.started:
            await self._start()
        beat = await self.queue.heartbeat(self.claim.job_id, self.claim.attempt, self.job.last_seq)
        if not beat.alive:
            log.warning("sweep %s: lease lost; another worker coordinates it now", self.claim.job_id)
            return False
        trials = await self._read()
        if beat.cancel_requested:
            await self._cancel_trials(trials, beat.cancel_reason or "the sweep was cancelled")
            await self._end(self.job.make(JobCancelled, event_id=f"{self.claim.job_id}-cancelled",
                                          reason=beat.cancel_reason or "cancelled by request"))
            return False
        stopped = self.stopped
        for stop in stopping.to_stop(self.command.early_stopping,
                                     {t.spec.index: t.history for t in trials},
                                     {t.spec.index for t in trials if not t.ended} - stopped):
            trial = trials[stop.index]
            await self.job.emit(SweepTrialStopped, event_id=f"{self.claim.job_id}-stop-{stop.index}",
                                index=stop.index, trial_job_id=trial.spec.job_id, step=stop.step, value=stop.value,
                                reason=stop.reason)
            await self._cancel(trial.spec.job_id, f"early stopping by sweep {self.claim.job_id}: {stop.reason}")
            stopped.add(stop.index)
        await self._report(trials, stopped)
        if all(t.ended for t in trials):
            await self._complete(trials, stopped)
            return False
        return True

    async def _start(self) -> None:
        async with self.runtime.sessions() as session:
            recorded, _ = await last_recorded(session, self.claim.job_id)
            begun = await session.scalar(select(JobEventRow.seq).where(
                JobEventRow.job_id == self.claim.job_id, JobEventRow.type == "SweepStarted").limit(1))
            stops = (await session.execute(select(JobEventRow.data).where(
                JobEventRow.job_id == self.claim.job_id, JobEventRow.type == "SweepTrialStopped"))).scalars()
            self.stopped = {int(data["index"]) for data in stops}  # by the worker that held the sweep before
        self.job.last_seq = max(self.job.last_seq, recorded)
        if begun is None:
            command = self.command
            await self.job.emit(SweepStarted, event_id=f"{self.claim.job_id}-started", model_name=command.model_name,
                                metric=command.metric, method=command.method, early_stopping=command.early_stopping,
                                alias=command.alias, trials=self.spec.trials, wait=True)
        for trial in self.spec.trials:  # again after a takeover: a trial queued before is not queued twice
            await self.runtime.publisher.command(self.runtime.topics.train_requested, trial.job_id,
                                                 self._request(trial))
        self.started = True

    def _request(self, trial: SweepTrial) -> TrainRequested:
        command = self.command
        return TrainRequested(
            job_id=trial.job_id, model_id=trial.model_id, model_name=command.model_name, owner=command.owner,
            description=f"trial {trial.index} of sweep {self.claim.job_id}: {trial.parameters}",
            dataset=DatasetRef(key=self.spec.dataset_key), tokenizer=command.tokenizer,
            tokenizer_options=command.tokenizer_options,
            hyperparameters=space.merged(command.hyperparameters, trial.parameters))

    async def _read(self) -> list[Trial]:
        fact_type, field = METRIC_FACT[self.command.metric]
        ids = [t.job_id for t in self.spec.trials]
        unread = or_(*(and_(JobEventRow.job_id == job_id, JobEventRow.seq > seq)
                       for job_id, seq in self.read_up_to.items()))
        async with self.runtime.sessions() as session:
            jobs = {j.id: j for j in (await session.execute(select(Job).where(Job.id.in_(ids)))).scalars()}
            models = {m.id: m for m in (await session.execute(
                select(Model).where(Model.id.in_([t.model_id for t in self.spec.trials])))).scalars()}
            rows = (await session.execute(select(JobEventRow.job_id, JobEventRow.seq, JobEventRow.data).where(
                unread, JobEventRow.type == fact_type).order_by(JobEventRow.seq))).all()
        for job_id, seq, data in rows:
            self.histories[job_id].append((int(data["step"]), float(data[field])))
            self.read_up_to[job_id] = max(self.read_up_to[job_id], seq)
        trials = []
        for trial in self.spec.trials:
            job, model = jobs.get(trial.job_id), models.get(trial.model_id)
            trials.append(Trial(trial, job.status if job is not None else "missing",
                                (job.step or 0) if job is not None else 0,
                                (job.max_iters or 0) if job is not None else 0, sorted(self.histories[trial.job_id]),
                                model.version if model is not None else None))
        return trials

    async def _cancel(self, job_id: str, reason: str) -> None:
        await self.runtime.publisher.command(self.runtime.topics.job_control, job_id,
                                             CancelRequested(job_id=job_id, owner=self.claim.owner, reason=reason))

    async def _cancel_trials(self, trials: list[Trial], reason: str) -> None:
        for trial in trials:
            if not trial.ended:
                await self._cancel(trial.spec.job_id, f"sweep {self.claim.job_id} was cancelled: {reason}")

    def _result(self, trial: Trial) -> TrialResult:
        assert trial.value is not None
        step = min(trial.history, key=lambda point: point[1])[0]
        return TrialResult(index=trial.spec.index, job_id=trial.spec.job_id, model_id=trial.spec.model_id,
                           version=trial.version, value=trial.value, step=step, parameters=trial.spec.parameters)

    def _best(self, trials: list[Trial], stopped: set[int], ended_only: bool) -> TrialResult | None:
        """The trial with the lowest metric: among those that completed at the end; among every trial not stopped
        and not failed while the sweep runs."""
        usable = [t for t in trials if t.value is not None and t.spec.index not in stopped
                  and (t.status == "completed" if ended_only else t.status != "failed")]
        if not usable:
            return None
        return self._result(min(usable, key=lambda t: t.value))  # type: ignore[arg-type,return-value]

    async def _report(self, trials: list[Trial], stopped: set[int]) -> None:
        best = self._best(trials, stopped, ended_only=False)
        counts = dict(finished=sum(t.ended for t in trials), running=sum(not t.ended for t in trials),
                      stopped=len(stopped), failed=sum(t.status == "failed" for t in trials), total=len(trials))
        seen = (tuple(counts.values()), best.index if best else None)  # a trial ended, or another leads
        if seen != self.reported:
            await self.job.emit(SweepProgress, best=best, **counts)
            self.reported = seen

    async def _complete(self, trials: list[Trial], stopped: set[int]) -> None:
        best = self._best(trials, stopped, ended_only=True)
        alias = self.command.alias if best is not None and best.version is not None else None
        if alias is not None and best is not None:
            await self.runtime.publisher.publish(ModelAliasSet(
                job_id=f"{self.claim.job_id}-alias", event_id=f"{self.claim.job_id}-alias", seq=1,
                producer=self.runtime.publisher.producer_id, owner=self.claim.owner, kind="registry",
                name=self.command.model_name, alias=alias, model_id=best.model_id, version=best.version),
                wait=True)
        async with self.runtime.sessions() as session:
            row = await session.get(Job, self.claim.job_id)
        began = row.started_at if row is not None and row.started_at is not None else utc_now()
        await self._end(self.job.make(
            SweepCompleted, event_id=f"{self.claim.job_id}-completed", best=best, alias=alias,
            completed=sum(t.status == "completed" for t in trials), stopped=len(stopped),
            failed=sum(t.status == "failed" for t in trials), total=len(trials),
            wall_s=round((utc_now() - began).total_seconds(), 3), steps_run=sum(t.step for t in trials),
            steps_planned=sum(max(t.planned, t.step) for t in trials)))

    async def _end(self, terminal: Any) -> None:
        payload = terminal.model_dump(mode="json")
        if not await self.queue.complete(self.claim.job_id, self.claim.attempt, payload, self.job.last_seq):
            log.warning("sweep %s: lease lost before the end; not publishing %s", self.claim.job_id, terminal.type)
            return
        await self._publish_end(payload)

    async def _publish_end(self, payload: dict[str, Any]) -> None:
        await self.runtime.publisher.publish(decode_event(payload), wait=True)
        await self.queue.done(self.claim.job_id, self.claim.attempt)


class SweepRunner:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.queue = JobQueue(runtime.sessions, runtime.worker_id, runtime.settings.topic_prefix)
        self.leases = LeaseWatch(self.queue, ("sweep",), runtime.settings.lease_s)
        self.held: dict[str, Coordinator] = {}
        self._kick = asyncio.Event()

    def kick(self) -> None:
        self._kick.set()

    async def run_forever(self, period_s: float = 1.0) -> None:
        await self.runtime.ready.wait()
        await tick_forever(self.tick, self._kick, self.leases, "sweep runner", period_s=period_s)

    async def tick(self) -> None:
        abandoned = await self.leases.abandoned(self.held)
        while (claim := await self.queue.claim_next(("sweep",)) or await self.leases.take_over(abandoned)):
            log.info("coordinating sweep %s (attempt %d)", claim.job_id, claim.attempt)
            self.held[claim.job_id] = Coordinator(self.runtime, self.queue, claim)
        for job_id, coordinator in list(self.held.items()):
            try:
                going = await coordinator.step()
            except DATABASE_DOWN:
                raise
            except Exception:  # one sweep's trouble must not stop the others; its lease lapses and it is retried
                log.exception("sweep %s: coordination failed; another worker will take it over", job_id)
                going = False
            if not going:
                del self.held[job_id]

    async def hand_back(self) -> None:
        """Give the sweeps held back to the queue (the worker is stopping): another worker goes on with them at
        once, without waiting for the lease to lapse."""
        for job_id, coordinator in list(self.held.items()):
            try:
                await self.queue.release(job_id, coordinator.claim.attempt, coordinator.job.last_seq)
            except DATABASE_DOWN:
                pass  # the lease lapses instead
        self.held.clear()
