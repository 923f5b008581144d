"""One claimed job, run in a child process: the parent side.

The child reports facts over a multiprocessing queue; this side numbers and publishes them, renews the job's lease
every second, passes on a cancel, and ends the job exactly once: the terminal fact goes into the queue row (an
outbox) before it is published, under the run's attempt, so a run that lost its lease can never end the job.

Fencing: another worker may take the job over once its lease has looked stale for `lease_s`. A run that has not
renewed its lease for half of that (the database is out of its reach) can no longer know it still holds the job, so
it stops being able to act: its child process is paused (SIGSTOP: no step, no checkpoint written) and its facts are
held back. The next renewal decides: still ours, the child goes on and the held facts are published; taken over,
the child is killed and they are dropped. A database outage that every worker sees pauses jobs the same way, and
they go on where they were once it is back (nobody can take a job over while nobody can read the leases).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue as thread_queue
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agents.jobs import child
from agents.jobs.child import CANCEL, RUN, SUSPEND, Offer, Report, Suspended, about
from agents.jobs.kinds import JobKind
from agents.jobs.queue import Claim, JobQueue
from agents.runtime import Runtime
from events import JobCancelled, JobEvent, decode_event
from infra.db import DATABASE_DOWN
from infra.db.queries import last_recorded
from infra.joblog import last_seq_in_log
from infra.publisher import JobLog
from infra.retry import first_line, while_down

log = logging.getLogger(__name__)
T = TypeVar("T")
# Job processes are forked from a server process that has imported PyTorch and the jobs' code once, instead of each
# starting a fresh interpreter (about 2.5 s on two cores). The server is a clean, single-threaded process of its
# own (never this worker, whose threads a fork would copy in the middle of what they do); it exits when the worker
# does, and its children with it (their parent-death signal).
JOBS = multiprocessing.get_context("forkserver")


def preload(modules: list[str]) -> None:
    """What the job processes' server imports before it forks any: called once, before the first job starts."""
    JOBS.set_forkserver_preload(["agents.jobs.child", *modules])


def start_server() -> None:
    """Start the job processes' server now (it imports PyTorch: seconds). Called in a thread when the worker starts:
    left to the first job, it would hold the event loop up while the server imports."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


class Run:
    def __init__(self, runtime: Runtime, queue: JobQueue, claim: Claim, kind: JobKind, on_finished: Any = None,
                 cancel_grace_s: float = 15.0):
        self.runtime = runtime
        self.queue = queue
        self.claim = claim
        self.kind = kind
        self.on_finished = on_finished
        self.cancel_grace_s = cancel_grace_s
        self.finished = False
        self.lost = False
        self.process: multiprocessing.process.BaseProcess | None = None
        self._context = JOBS
        # Without a lock: one aligned int, written here only. With one, a job process killed while reading it (kill -9,
        # the OOM killer) would leave the lock held, and this worker's next write would wait for ever.
        self._mode = self._context.Value("i", RUN, lock=False)
        self._task: asyncio.Task[None] | None = None
        self._cancel_reason: str | None = None
        self._stop_deadline: float | None = None
        self.job: JobLog | None = None
        self._renewed = self._started = time.monotonic()  # when the lease was last renewed; when the run began
        self.fenced = False
        self._handed_back = False  # a helper whose worker is stopping
        self._held: list[JobEvent] = []  # facts made while fenced

    def start(self) -> None:
        self._task = asyncio.create_task(self._main(), name=f"run-{self.claim.job_id}")

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def suspend(self, timeout_s: float = 20.0) -> None:
        if self.kind.helps:
            # A helper's ranks leave at once, as if its worker had died: the run's own ranks start again from their
            # checkpoint and wait for another host. (Stopped in step with the others, they would end the launcher's
            # rendezvous, and the run with it.) Its job goes back to the queue for another worker.
            self._handed_back = True
            if self.process is not None and self.process.is_alive():
                self.process.kill()
            await self.wait()
            return
        self._mode.value = SUSPEND
        # A fenced run may not write a last checkpoint (the job may be another's by now): it is stopped at once.
        self._stop_deadline = time.monotonic() + (0.0 if self.fenced else timeout_s)
        await self.wait()

    async def _main(self) -> None:
        try:
            if self.claim.outbox is not None:
                await self._publish_outbox(self.claim.outbox)
                return
            if self.kind.helps:  # it publishes nothing: no log of its own to continue
                self.job = JobLog(self.runtime.publisher, job_id=self.claim.job_id, kind=self.kind.helps,
                                  owner=self.claim.owner, last_seq=0)
                if self._handed_back:  # its worker began stopping before it started
                    await self.queue.release(self.claim.job_id, self.claim.attempt, 0)
                else:
                    await self._run_child()
                return
            self.job = JobLog(self.runtime.publisher, job_id=self.claim.job_id, kind=self.claim.kind,
                              owner=self.claim.owner, last_seq=await self._last_seq())
            budget = self.runtime.settings.job_max_takeovers
            if self.claim.takeovers > budget:  # its runs keep dying (a poison job): fail it rather than retry for ever
                await self._end(self.job.make(
                    self.kind.failed, **about(self.kind.failed, self.claim.spec.get("model_id")),
                    reason=f"gave up: the worker running it died {self.claim.takeovers} times (the limit is "
                           f"{budget}, LFZ_JOB_MAX_TAKEOVERS); see the workers' logs"))
                return
            try:
                await self._run_child()
            finally:
                await self._withdraw_helpers()
        except BaseException:
            log.exception("run of job %s failed", self.claim.job_id)
            raise
        finally:
            log.info("run of job %s (attempt %d) ended", self.claim.job_id, self.claim.attempt)
            self.finished = True
            if self.on_finished is not None:
                self.on_finished()

    async def _last_seq(self) -> int:
        """Where this job's log stands. A run taking over from a dead worker cannot trust the projection alone:
        the dead worker may have been projecting the very partition its last facts went to. So the topic is read
        from the last recorded fact onwards."""
        async with self.runtime.sessions() as session:
            recorded, position = await last_recorded(session, self.claim.job_id)
        if self.claim.attempt == 1 and self.claim.last_seq <= 1:
            return max(self.claim.last_seq, recorded)  # a first start: nothing but the acceptance was published
        on_topic = await last_seq_in_log(self.runtime.settings, self.claim.job_id, position)
        return max(self.claim.last_seq, recorded, on_topic)

    async def _run_child(self) -> None:
        assert self.job is not None
        reports = self._context.Queue()
        # Started from the event-loop thread: the child's parent-death signal is tied to the starting thread.
        self.process = self._context.Process(
            target=child.main, name=f"lfz-{self.claim.kind}-{self.claim.job_id[:8]}",
            args=(self.kind.code, self.kind.helps or self.kind.name, self.kind.parse(self.claim.spec),
                  self.runtime.settings.model_dump(mode="json"), reports, self._mode, self.claim.attempt,
                  self.runtime.worker_id, os.getpid()),
        )
        self.process.start()
        inbox: asyncio.Queue[Report | Suspended | None] = asyncio.Queue()
        reader = threading.Thread(target=_read_reports, args=(reports, self.process, inbox,
                                                              asyncio.get_running_loop()), daemon=True)
        reader.start()
        self._renewed = self._started = time.monotonic()
        beats = asyncio.create_task(self._renew_lease())
        terminal: JobEvent | None = None
        suspended: Suspended | None = None
        try:
            while (report := await inbox.get()) is not None:
                if self.kind.helps:  # a helper's processes report nothing; should one, it is not a fact of the job
                    continue
                if isinstance(report, Offer):
                    await self.queue.offer(self.job.job_id, report.kind, self.claim.owner,
                                           {spec["job_id"]: spec for spec in report.specs})
                    continue
                if isinstance(report, Suspended):
                    suspended = report
                    continue
                fields = report.fields
                if report.fact is JobCancelled and self._cancel_reason:
                    fields = {**fields, "reason": self._cancel_reason}  # the child does not know why
                event = self.job.make(report.fact, **fields)
                if event.terminal:
                    terminal = event
                elif self.fenced:
                    self._held.append(event)
                elif not self.lost:
                    await self.runtime.publisher.publish(event)
        finally:
            beats.cancel()
            self.process.join(timeout=5)
        if self.fenced and not self.lost and self._mode.value != SUSPEND:
            await self._settle_fence()
        if self.lost:
            log.warning("job %s: lease lost to another worker; this run published nothing more", self.job.job_id)
            return
        if self.kind.helps:  # its worker is stopping: another may join the run in its place; else it served its run
            if self._handed_back:
                await self.queue.release(self.job.job_id, self.claim.attempt, 0)
            else:
                await self._once_the_database_answers(lambda: self.queue.done(self.claim.job_id, self.claim.attempt))
            return
        if self._mode.value == SUSPEND and terminal is None:
            await self.queue.release(self.job.job_id, self.claim.attempt, self.job.last_seq)
            log.info("job %s handed back to the queue (suspended=%s)", self.job.job_id, suspended is not None)
            return
        if suspended is not None and terminal is None and self._mode.value == RUN:  # the object store stayed away
            await self._once_the_database_answers(lambda: self.queue.release(
                self.job.job_id, self.claim.attempt, self.job.last_seq,  # type: ignore[union-attr]
                retry_after_s=suspended.retry_after_s))
            log.warning("job %s handed back to the queue for %.0fs: %s", self.job.job_id, suspended.retry_after_s,
                        suspended.reason)
            return
        if terminal is None:
            terminal = self._unexpected_end()
        await self._end(terminal)

    async def _withdraw_helpers(self) -> None:
        """However the run ended, the helpers it offered that nobody claimed are not wanted any more."""
        try:
            await self.queue.withdraw(self.claim.job_id)
        except DATABASE_DOWN as error:  # one claimed later finds no run to join, and ends
            log.warning("job %s: could not withdraw its helpers: %s", self.claim.job_id, first_line(error))

    def _unexpected_end(self) -> JobEvent:
        assert self.job is not None and self.process is not None
        if self._mode.value == CANCEL:
            return self.job.make(JobCancelled, reason=self._cancel_reason or "cancelled by request")
        code = self.process.exitcode
        return self.job.make(self.kind.failed,
                             reason=f"the {self.claim.kind} process stopped unexpectedly (exit code {code}); "
                                    "see the worker's log", **about(self.kind.failed, self.claim.spec.get("model_id")))

    async def _end(self, terminal: JobEvent) -> None:
        job = self.job
        assert job is not None
        payload = terminal.model_dump(mode="json")
        if not await self._once_the_database_answers(
                lambda: self.queue.complete(job.job_id, self.claim.attempt, payload, job.last_seq)):
            log.warning("job %s: lease lost before the end; not publishing %s", job.job_id, terminal.type)
            return
        await self._publish_outbox(payload)

    async def _publish_outbox(self, payload: dict[str, Any]) -> None:
        await self.runtime.publisher.publish(decode_event(payload), wait=True)
        await self._once_the_database_answers(lambda: self.queue.done(self.claim.job_id, self.claim.attempt))

    async def _once_the_database_answers(self, call: Callable[[], Awaitable[T]]) -> T:
        """A job that ends while the database is down waits for it to come back. Giving up would leave the job
        running on a stale lease until another run took it over, to find nothing left to do. The retries stay well
        inside the lease, so this run, not a takeover, ends the job; only a worker that is stopping gives up."""
        return await while_down(call, DATABASE_DOWN, what=f"the end of job {self.claim.job_id}", max_delay_s=2.0,
                                give_up=lambda: self._mode.value == SUSPEND, logger=log)

    async def _renew_lease(self) -> None:
        assert self.job is not None and self.process is not None
        interval = min(1.0, self.runtime.settings.lease_s / 5)
        while True:
            await asyncio.sleep(interval)
            if self._stop_deadline is not None and time.monotonic() > self._stop_deadline and self.process.is_alive():
                log.warning("job %s: the child did not stop in time; killing it", self.job.job_id)
                self.process.kill()
            try:  # bounded: a database behind a dropped network would hold the call (and the fence) up for minutes
                beat = await asyncio.wait_for(
                    self.queue.heartbeat(self.job.job_id, self.claim.attempt, self.job.last_seq),
                    max(1.0, self.runtime.settings.lease_s / 4))
            except Exception as exc:  # the database is out of reach: fence once the lease may have gone stale
                log.warning("job %s: could not renew the lease: %s", self.job.job_id, first_line(exc))
                if not self.fenced and time.monotonic() - self._renewed > self.runtime.settings.lease_s / 2:
                    self._fence()
                continue
            self._renewed = time.monotonic()
            if not beat.alive:
                self.lost = True
                self.process.kill()
                return
            if self.fenced:
                await self._unfence()
            if beat.cancel_requested and self._mode.value == RUN:
                self._stop(beat.cancel_reason)
            limit = self.runtime.settings.job_max_wall_s
            if limit and self._mode.value == RUN and time.monotonic() - self._started > limit:
                self._stop(f"ran past the wall-clock limit of {limit:g}s (LFZ_JOB_MAX_WALL_S); its last checkpoint "
                           "is kept and can be continued")

    def _stop(self, reason: str | None) -> None:
        """Cancel the run: the child checkpoints and ends with JobCancelled naming `reason`."""
        self._cancel_reason = reason
        self._mode.value = CANCEL
        self._stop_deadline = time.monotonic() + self.cancel_grace_s


    def _fence(self) -> None:
        assert self.process is not None and self.process.pid is not None
        self.fenced = True
        log.warning("job %s: lease not renewed for %.0fs; pausing its process and holding its facts until the "
                    "database answers", self.claim.job_id, time.monotonic() - self._renewed)
        _signal(self.process.pid, signal.SIGSTOP)
        if self._mode.value == SUSPEND:  # a worker stopping while fenced: no last checkpoint, see `suspend`
            self._stop_deadline = time.monotonic()

    async def _unfence(self) -> None:
        """The lease was renewed: the job is still this run's."""
        assert self.process is not None and self.process.pid is not None
        held, self._held, self.fenced = self._held, [], False
        log.warning("job %s: lease renewed; going on, with %d facts held meanwhile", self.claim.job_id, len(held))
        for event in held:
            await self.runtime.publisher.publish(event)
        _signal(self.process.pid, signal.SIGCONT)

    async def _settle_fence(self) -> None:
        """The child ended while fenced: wait for the database to say whose the job is, then publish what was held
        back, or drop it."""
        assert self.job is not None
        beat = await self._once_the_database_answers(
            lambda: self.queue.heartbeat(self.job.job_id, self.claim.attempt, self.job.last_seq))  # type: ignore
        if beat.alive:
            await self._unfence()
        else:
            self.lost = True


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _read_reports(reports: Any, process: Any, inbox: asyncio.Queue, loop: asyncio.AbstractEventLoop) -> None:
    """Thread: move the child's reports onto the event loop; None once the child has exited and all are read."""
    while True:
        try:
            report = reports.get(timeout=0.2)
        except thread_queue.Empty:
            if not process.is_alive():
                break
            continue
        except (EOFError, OSError):
            break
        loop.call_soon_threadsafe(inbox.put_nowait, report)
    loop.call_soon_threadsafe(inbox.put_nowait, None)
