"""The scheduler of one worker: starts queued jobs while it has free slots, and takes over abandoned ones.

A job is abandoned when its lease has not been renewed for `lease_s`, as this worker saw it: the same heartbeat
value, observed by successful reads spanning `lease_s`. Counting only what this worker observed keeps a database
outage (when nobody can renew anything) or clock skew between machines from looking like a dead worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Container
from datetime import datetime

from agents.jobs import runs
from agents.jobs.kinds import JobKind, helped_job
from agents.jobs.queue import Claim, JobQueue, Lease
from agents.jobs.runs import Run
from agents.runtime import Runtime
from infra.db import DATABASE_DOWN
from infra.db.queries import last_recorded
from infra.retry import first_line

log = logging.getLogger(__name__)


class LeaseWatch:
    """The leases of some kinds of job as this worker saw them, and the taking over of those left to lapse."""

    def __init__(self, queue: JobQueue, kinds: tuple[str, ...], lease_s: float):
        self.queue, self.kinds, self.lease_s = queue, kinds, lease_s
        self._seen: dict[str, tuple[datetime, float]] = {}  # job id -> (heartbeat value, first seen, monotonic)

    def clear(self) -> None:
        self._seen.clear()

    async def abandoned(self, held: Container[str]) -> list[Lease]:
        """The leases not renewed for `lease_s`, by successful reads (those of `held`, this worker's, aside)."""
        now = time.monotonic()
        seen: dict[str, tuple[datetime, float]] = {}
        abandoned = []
        for lease in await self.queue.leases(self.kinds):
            if lease.job_id in held:
                continue
            previous = self._seen.get(lease.job_id)
            first_seen = previous[1] if previous is not None and previous[0] == lease.heartbeat_at else now
            seen[lease.job_id] = (lease.heartbeat_at, first_seen)
            if now - first_seen >= self.lease_s:
                abandoned.append(lease)
        self._seen = seen
        return abandoned

    async def take_over(self, abandoned: list[Lease]) -> Claim | None:
        while abandoned:
            lease = abandoned.pop(0)
            claim, wait_s = await self.queue.take_over(lease.job_id, lease.attempt, lease.heartbeat_at,
                                                       lease.takeovers)
            if claim is not None or wait_s > 0:
                self._seen.pop(lease.job_id, None)
            if wait_s > 0:
                log.warning("job %s: its worker stopped renewing its lease again (takeover %d); it waits %.0fs in "
                            "the queue before it runs again", lease.job_id, lease.takeovers + 1, wait_s)
            if claim is not None:
                log.warning("took over job %s from a worker that stopped renewing its lease (takeover %d)",
                            lease.job_id, claim.takeovers)
                return claim
        return None


async def tick_forever(tick: Callable[[], Awaitable[None]], kick: asyncio.Event, leases: LeaseWatch, name: str,
                       going: Callable[[], bool] = lambda: True, period_s: float = 1.0) -> None:
    """Call `tick` once a period, and at once when `kick` is set, until `going()` is false; a tick that fails is
    logged and the next one tried (a database that is down also makes `leases` forget what it observed)."""
    while going():
        try:
            await asyncio.wait_for(kick.wait(), period_s)
        except TimeoutError:
            pass
        kick.clear()
        try:
            await tick()
        except DATABASE_DOWN as exc:
            leases.clear()  # what was observed before the outage proves nothing about after it
            log.warning("%s cannot reach the database: %s", name, first_line(exc))
        except Exception:
            log.exception("%s tick failed", name)


class Scheduler:
    def __init__(self, runtime: Runtime, kinds: dict[str, JobKind]):
        self.runtime = runtime
        self.kinds = kinds
        self.helpers = tuple(name for name, kind in kinds.items() if kind.helps)  # claimed first
        self.others = tuple(name for name in kinds if name not in self.helpers)
        runs.preload(sorted({kind.code.__module__ for kind in kinds.values()}))
        self.queue = JobQueue(runtime.sessions, runtime.worker_id, runtime.settings.topic_prefix)
        self.leases = LeaseWatch(self.queue, tuple(kinds), runtime.settings.lease_s)
        self.runs: dict[str, Run] = {}
        self._kick = asyncio.Event()
        self._stopping = False

    def kick(self) -> None:
        self._kick.set()

    async def run_forever(self, period_s: float = 1.0) -> None:
        await asyncio.to_thread(runs.start_server)
        await self.runtime.ready.wait()
        await tick_forever(self.tick, self._kick, self.leases, "scheduler", lambda: not self._stopping, period_s)

    async def tick(self) -> None:
        self.runs = {job_id: run for job_id, run in self.runs.items() if not run.finished}
        abandoned = await self.leases.abandoned(self.runs)
        while len(self.runs) < self.runtime.settings.worker_max_jobs and not self._stopping:
            # A helper first: a run waiting for hosts holds its own worker already.
            busy = {helped_job(job_id) for job_id in self.runs}
            claim = (await self.queue.claim_next(self.helpers, busy) if self.helpers else None) \
                or await self.queue.claim_next(self.others) \
                or await self.leases.take_over([lease for lease in abandoned if helped_job(lease.job_id) not in busy])
            if claim is None:
                return
            self.start(claim)

    def start(self, claim: Claim) -> None:
        log.info("starting %s job %s (attempt %d)", claim.kind, claim.job_id, claim.attempt)
        run = Run(self.runtime, self.queue, claim, self.kinds[claim.kind], on_finished=self.kick)
        self.runs[claim.job_id] = run
        run.start()

    async def stop(self) -> list[tuple[str, int]]:
        """Hand running jobs back: each child checkpoints and exits, and the job returns to the queue. Returns the
        job id and the last sequence number published of each job handed back."""
        self._stopping = True
        runs = [run for run in self.runs.values() if not run.finished]
        await asyncio.gather(*(run.suspend() for run in runs))
        return [(run.claim.job_id, run.job.last_seq) for run in runs if run.job is not None]

    async def hand_back_jobs(self, patience_s: float = 10.0) -> None:
        """Suspend the running jobs while the agents still run, and give the record agent a moment to record the
        facts that suspending them published (their last checkpoints). The worker calls this before it stops its
        agents: with the embedded broker, which keeps nothing when it stops, a fact left unrecorded now is gone."""
        if not self.runtime.ready.is_set():
            return
        handed_back = await self.stop()
        # Not wait_for: a read held up by the database would hold the stop up as long, cancelled or not.
        waiting = asyncio.ensure_future(self._recorded(handed_back))
        done, _ = await asyncio.wait({waiting}, timeout=patience_s)
        if not done:  # the facts are on the topic: a record agent records them once the database answers
            waiting.cancel()
            log.warning("stopping before the projection recorded the last facts of %s",
                        ", ".join(job_id for job_id, _ in handed_back))

    async def _recorded(self, jobs: list[tuple[str, int]]) -> None:
        for job_id, last_seq in jobs:
            while True:
                try:
                    async with self.runtime.sessions() as session:
                        if (await last_recorded(session, job_id))[0] >= last_seq:
                            break
                except DATABASE_DOWN:
                    pass
                await asyncio.sleep(0.1)
