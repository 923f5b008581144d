"""The job queue in the database: which worker runs which train or evaluate job, with leases and cancel flags.

Kafka hands each request to one worker of the group, which records it here and returns at once; any worker with
a free slot then claims it. A running job's worker renews its lease every second. When a worker dies, its lease
goes stale and another worker takes the job over with `attempt + 1`, which fences the old one out: every write of
a run names its attempt, and a write for an attempt that is no longer current changes nothing.

Every claim adds to `attempt`; only a takeover (a worker that died) adds to `takeovers`, the job's retry budget, so
that a job handed back cleanly (a worker stopping, a rolling restart) any number of times never fails for it. The
first takeover restarts the job at once; each later one waits longer before the job may run again (`not_before`).
Queued jobs are handed out fairly between owners: the next job is the oldest of the owner with the fewest running.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, not_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agents.jobs.kinds import helpers_of
from events import QUEUED_KINDS, utc_now
from infra.db.queries import belongs_to
from infra.db.tables import JobQueueRow

QUEUED, RUNNING, COMPLETING, DONE = "queued", "running", "completing", "done"
BACKOFF_FIRST_S, BACKOFF_MAX_S = 5.0, 300.0


def _when(moment: datetime | None) -> float:
    """A time for sorting; never served sorts first."""
    return moment.timestamp() if moment is not None else float("-inf")


def backoff_s(takeovers: int) -> float:
    """How long a job waits before its `takeovers`-th restart: none for the first, then 5 s, 10 s, 20 s, ..."""
    return 0.0 if takeovers <= 1 else min(BACKOFF_FIRST_S * 2 ** (takeovers - 2), BACKOFF_MAX_S)


@dataclass(frozen=True)
class Claim:
    job_id: str
    kind: str
    owner: str | None
    attempt: int
    last_seq: int
    spec: dict[str, Any]
    outbox: dict[str, Any] | None = None  # a terminal fact written but maybe not yet published
    takeovers: int = 0

    @classmethod
    def of(cls, row: JobQueueRow) -> Claim:
        return cls(row.job_id, row.kind, row.owner, row.attempt, row.last_seq, row.spec,
                   row.outbox if row.state == COMPLETING else None, row.takeovers or 0)


@dataclass(frozen=True)
class Lease:
    job_id: str
    attempt: int
    heartbeat_at: datetime
    takeovers: int


@dataclass(frozen=True)
class Beat:
    alive: bool  # False: the lease was lost (taken over, or the job ended elsewhere)
    cancel_requested: bool = False
    cancel_reason: str | None = None


class JobQueue:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], worker: str, namespace: str = "lfz."):
        self._sessions = sessions
        self.worker = worker
        self.namespace = namespace

    def _key(self, job_id: str) -> tuple[str, str]:
        return (self.namespace, job_id)

    def _mine(self, job_id: str | None = None) -> list:
        condition = [JobQueueRow.namespace == self.namespace]
        if job_id is not None:
            condition.append(JobQueueRow.job_id == job_id)
        return condition

    async def enqueue(self, job_id: str, kind: str, owner: str | None, spec: dict[str, Any]) -> JobQueueRow | None:
        """Record a new job; None when it was recorded before (a redelivered request)."""
        now = utc_now()
        async with self._sessions() as session:
            dialect = session.bind.dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            statement = insert(JobQueueRow).values(
                namespace=self.namespace, job_id=job_id, kind=kind, owner=owner, state=QUEUED, attempt=0,
                cancel_requested=False, last_seq=1, spec=spec, created_at=now, updated_at=now,
            ).on_conflict_do_nothing(index_elements=["namespace", "job_id"])
            result = await session.execute(statement.returning(JobQueueRow.job_id))
            inserted = result.first() is not None
            await session.commit()
        return await self.get(job_id) if inserted else None

    async def get(self, job_id: str) -> JobQueueRow | None:
        async with self._sessions() as session:
            return await session.get(JobQueueRow, self._key(job_id))

    async def _change(self, job_id: str, *conditions: Any, **values: Any) -> JobQueueRow | None:
        """Update the job's row where `conditions` hold (one statement: another worker's change cannot interleave);
        the row as it is now, or None when they did not hold."""
        async with self._sessions() as session:
            result = await session.execute(
                update(JobQueueRow).where(*self._mine(job_id), *conditions)
                .values(**values, updated_at=utc_now()).execution_options(synchronize_session=False)
            )
            await session.commit()
            if result.rowcount != 1:
                return None
            return await session.get(JobQueueRow, self._key(job_id), populate_existing=True)

    async def set_seq(self, job_id: str, last_seq: int) -> None:
        await self._change(job_id, last_seq=last_seq)

    async def offer(self, job_id: str, kind: str, owner: str | None, helpers: dict[str, dict[str, Any]]) -> None:
        """Queue helpers of a job's run (`helper id -> spec`), withdrawing those an earlier run offered."""
        await self.withdraw(job_id)
        for helper, spec in helpers.items():
            await self.enqueue(helper, kind, owner, spec)

    async def withdraw(self, job_id: str) -> None:
        """End the job's helpers that no worker has claimed (those running end with the run they serve)."""
        async with self._sessions() as session:
            await session.execute(
                update(JobQueueRow)
                .where(*self._mine(), JobQueueRow.job_id.startswith(helpers_of(job_id), autoescape=True),
                       JobQueueRow.state == QUEUED)
                .values(state=DONE, updated_at=utc_now()).execution_options(synchronize_session=False))
            await session.commit()

    async def claim_next(self, kinds: tuple[str, ...] = QUEUED_KINDS, busy: Collection[str] = ()) -> Claim | None:
        """Take the next queued job (see `_candidates`), if another worker does not take it first; never a helper of a
        job in `busy` (those this worker already runs or helps: a host joins a run once)."""
        for job_id, attempt in await self._candidates(kinds, busy):
            row = await self._change(job_id, JobQueueRow.state == QUEUED, JobQueueRow.attempt == attempt,
                                     state=RUNNING, not_before=None, **self._taken(attempt))
            if row is not None:
                return Claim.of(row)
        return None

    async def _candidates(self, kinds: tuple[str, ...], busy: Collection[str] = ()) -> list[tuple[str, int]]:
        """Queued jobs that may start now, fairest first: owners ordered by how many jobs they have running (fewest
        first), then by when they were last served (longest ago first: round-robin), then by whose oldest job waits
        longest; each owner's jobs oldest first. One owner's backlog of a thousand jobs thus never holds back another
        owner's one, even when all of the first owner's running jobs end at the same moment."""
        now = utc_now()
        ready = [*self._mine(), JobQueueRow.state == QUEUED, JobQueueRow.kind.in_(kinds),
                 or_(JobQueueRow.not_before.is_(None), JobQueueRow.not_before <= now),
                 *(not_(JobQueueRow.job_id.startswith(helpers_of(job_id), autoescape=True)) for job_id in busy)]
        async with self._sessions() as session:
            waiting = (await session.execute(
                select(JobQueueRow.owner, func.min(JobQueueRow.created_at)).where(*ready).group_by(JobQueueRow.owner)
            )).all()
            if not waiting:
                return []
            running = dict((await session.execute(
                select(JobQueueRow.owner, func.count()).where(*self._mine(),
                                                              JobQueueRow.state.in_((RUNNING, COMPLETING)))
                .group_by(JobQueueRow.owner)
            )).all())
            served = dict((await session.execute(  # when each waiting owner last had a job start (or beat)
                select(JobQueueRow.owner, func.max(JobQueueRow.heartbeat_at))
                .where(*self._mine(), JobQueueRow.owner.in_([o for o, _ in waiting if o is not None]))
                .group_by(JobQueueRow.owner)
            )).all())
            order = sorted(waiting, key=lambda row: (running.get(row[0], 0), _when(served.get(row[0])), row[1]))
            candidates: list[tuple[str, int]] = []
            for owner, _ in order[:4]:
                same_owner = belongs_to(JobQueueRow.owner, owner)
                rows = await session.execute(select(JobQueueRow.job_id, JobQueueRow.attempt)
                                             .where(*ready, same_owner).order_by(JobQueueRow.created_at).limit(2))
                candidates.extend((job_id, attempt) for job_id, attempt in rows.all())
            return candidates

    async def leases(self, kinds: tuple[str, ...]) -> list[Lease]:
        """The lease of every job of these kinds that some worker holds."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(JobQueueRow.job_id, JobQueueRow.attempt, JobQueueRow.heartbeat_at, JobQueueRow.takeovers)
                .where(*self._mine(), JobQueueRow.state.in_((RUNNING, COMPLETING)), JobQueueRow.kind.in_(kinds))
            )
            return [Lease(job_id, attempt, beat, takeovers or 0) for job_id, attempt, beat, takeovers in rows.all()]

    async def take_over(self, job_id: str, attempt: int, heartbeat_at: datetime,
                        takeovers: int) -> tuple[Claim | None, float]:
        """Take a job whose worker stopped renewing its lease: `(the claim, 0)`, or `(None, seconds)` when the job
        goes back to the queue to wait that long first (it was taken over before), or `(None, 0)` when another
        worker was quicker. The state stays for a job taken over while completing: it only needs its outbox
        published, at once."""
        stale = (JobQueueRow.attempt == attempt, JobQueueRow.heartbeat_at == heartbeat_at)
        wait = backoff_s(takeovers + 1)
        if wait > 0:
            row = await self._change(job_id, JobQueueRow.state == RUNNING, *stale, state=QUEUED, worker=None,
                                     attempt=attempt + 1, takeovers=takeovers + 1,
                                     not_before=utc_now() + timedelta(seconds=wait))
            if row is not None:
                return None, wait
        row = await self._change(job_id, JobQueueRow.state.in_((RUNNING, COMPLETING)), *stale,
                                 takeovers=takeovers + 1, **self._taken(attempt))
        return (Claim.of(row) if row is not None else None), 0.0

    def _taken(self, attempt: int) -> dict[str, Any]:
        """This worker's lease, under the next attempt (which fences out the one before)."""
        return dict(worker=self.worker, attempt=attempt + 1, heartbeat_at=utc_now())

    async def heartbeat(self, job_id: str, attempt: int, last_seq: int) -> Beat:
        row = await self._change(job_id, JobQueueRow.attempt == attempt, JobQueueRow.state == RUNNING,
                                 heartbeat_at=utc_now(), last_seq=last_seq)
        return Beat(alive=False) if row is None else Beat(True, row.cancel_requested, row.cancel_reason)

    async def complete(self, job_id: str, attempt: int, terminal: dict[str, Any], last_seq: int) -> bool:
        """Write the terminal fact to the row before publishing it (an outbox); False if the lease was lost.

        If the worker dies between this and `done`, whoever takes the job over publishes the same fact again
        (same event id), so the job ends once."""
        row = await self._change(job_id, JobQueueRow.attempt == attempt, JobQueueRow.state == RUNNING,
                                 state=COMPLETING, outbox=terminal, last_seq=last_seq, heartbeat_at=utc_now())
        return row is not None

    async def done(self, job_id: str, attempt: int) -> None:
        await self._change(job_id, JobQueueRow.attempt == attempt, state=DONE)

    async def release(self, job_id: str, attempt: int, last_seq: int, retry_after_s: float = 0.0) -> None:
        """Give a running job back to the queue (its worker is shutting down, or the object store is away); the
        next claim, no sooner than `retry_after_s` from now, resumes it. Not a takeover: no retry budget is used."""
        not_before = utc_now() + timedelta(seconds=retry_after_s) if retry_after_s > 0 else None
        await self._change(job_id, JobQueueRow.attempt == attempt, JobQueueRow.state == RUNNING, state=QUEUED,
                           worker=None, last_seq=last_seq, not_before=not_before)

    async def request_cancel(self, job_id: str, reason: str) -> str | None:
        """Flag a job for cancelling; returns its state then, or None if the job is not known yet (in which
        case a placeholder row remembers the cancel, and the request, when it comes, is cancelled at once)."""
        now = utc_now()
        async with self._sessions() as session:
            row = await session.get(JobQueueRow, self._key(job_id))
            if row is None:
                session.add(JobQueueRow(namespace=self.namespace, job_id=job_id, kind="unknown", owner=None,
                                        state=DONE, attempt=0, cancel_requested=True, cancel_reason=reason,
                                        last_seq=0, spec={}, created_at=now, updated_at=now))
                await session.commit()
                return None
            if row.state != DONE:
                row.cancel_requested, row.cancel_reason, row.updated_at = True, reason, now
                await session.commit()
            return row.state

    async def cancel_queued(self, job_id: str) -> Claim | None:
        """End a job that has not started: the caller then publishes its JobCancelled."""
        row = await self._change(job_id, JobQueueRow.state == QUEUED, state=DONE)
        return Claim.of(row) if row is not None else None
