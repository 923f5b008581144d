"""The spawned child process that runs one train or evaluate job, and what the job's code gets there.

The child never touches Kafka or the database: it reads and writes the object store, and reports each fact as its
`events` class and fields over a multiprocessing queue. The parent (runs.py) numbers, publishes and fences them. The
parent decides when the child stops, through a shared mode flag it checks (RUN, CANCEL, SUSPEND); if the worker dies,
the child dies too (it watches the worker's pid; the parent-death signal covers the server it was forked from).

The object store may be away for a while (a restart, a network blip): every read and write of a job goes through
`JobContext.stored`, which tries again with back-off while the job waits. Past `object_store_patience_s` the job
gives up for now: it is handed back to the queue (not failed), to start again a little later from its newest valid
checkpoint.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from events import FAILED_TYPE_FOR_KIND, JobEvent, Rejected
from infra.objectstore import ObjectStore, ObjectStoreUnavailable, open_object_store
from infra.process import die_with, die_with_parent
from infra.settings import Settings

RUN, CANCEL, SUSPEND = 0, 1, 2
log = logging.getLogger(__name__)
T = TypeVar("T")


def about(failed: type[JobEvent], model_id: str | None) -> dict[str, Any]:
    """The model a failure fact names, for the kinds whose jobs are about a model (a tokenize job's is a dataset)."""
    return {"model_id": model_id} if "model_id" in failed.model_fields else {}


class StoreDown(Exception):
    """The object store stayed away past the patience (or the job was told to stop while it waited)."""


@dataclass(frozen=True)
class Report:
    """A fact of the job, all but its envelope (job id, sequence number, producer), which the parent adds."""

    fact: type[JobEvent]
    fields: dict[str, Any]


@dataclass(frozen=True)
class Suspended:
    """The job stopped after its last checkpoint, at its parent's request or because the object store stayed away;
    the parent hands it back to the queue, to start again no sooner than `retry_after_s` from now."""

    retry_after_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class Offer:
    """The job asks for helpers: the parent queues one job of `kind` per spec, for other workers to claim."""

    kind: str
    specs: list[dict[str, Any]]


class JobContext:
    """What a job's code is given in the child: the settings, the object store, its attempt and worker, and where
    its facts go (`emit`) and whether to stop (`should_stop`)."""

    def __init__(self, settings: Settings, store: ObjectStore, reports: Any, mode: Any, attempt: int, worker: str,
                 reporting: bool = True, lead: bool = True):
        self.settings = settings
        self.store = store
        self.attempt = attempt
        self.worker = worker
        self.reporting = reporting  # False in the ranks of a run of several processes but the first
        self.lead = lead  # False in a helper's processes: they lend ranks to another worker's run of the job
        self._reports = reports
        self._mode = mode
        self._parent = os.getppid()

    def emit(self, fact: type[JobEvent], **fields: Any) -> None:
        if self.reporting:
            self._reports.put(Report(fact, fields))

    def offer(self, kind: str, specs: list[dict[str, Any]]) -> None:
        if self.reporting:
            self._reports.put(Offer(kind, specs))

    def suspended(self, retry_after_s: float = 0.0, reason: str = "") -> None:
        if self.reporting:
            self._reports.put(Suspended(retry_after_s, reason))

    def stored(self, call: Callable[[], T], what: str, waiting: Callable[[str], None] | None = None) -> T:
        """`call()` (an object store operation), tried again with back-off while the store is unavailable; `waiting`
        is told once, with why, so that the job's progress can say so. StoreDown past the patience, or as soon as
        the job is told to stop."""
        deadline = time.monotonic() + self.settings.object_store_patience_s
        delay, told = 0.5, False
        while True:
            try:
                return call()
            except ObjectStoreUnavailable as error:
                if self.should_stop() or time.monotonic() >= deadline:
                    raise StoreDown(f"{what}: the object store is unavailable ({error})") from None
                if not told and waiting is not None:
                    waiting(f"the object store is unavailable ({error}); {what} waits and is retried for up to "
                            f"{self.settings.object_store_patience_s:g}s (LFZ_OBJECT_STORE_PATIENCE_S)")
                told = True
                log.warning("%s: the object store is unavailable (%s); retrying in %.1fs", what, error, delay)
                until = time.monotonic() + delay
                while time.monotonic() < until and not self.should_stop():
                    time.sleep(0.1)
                delay = min(delay * 2, 10.0)

    @property
    def mode(self) -> int:
        return int(self._mode.value)

    @property
    def orphaned(self) -> bool:
        return os.getppid() != self._parent

    def should_stop(self) -> bool:
        return self.mode != RUN or self.orphaned


# A job's code: a module-level function (the spawned child imports it by name) that runs the job to its end and
# reports its facts; it raises Rejected for a failure whose reason the user can act on.
JobCode = Callable[[Any, JobContext], None]


def job_threads(settings: Settings) -> int:
    """PyTorch threads for one job: the setting, or this machine's cores shared among the jobs a worker runs."""
    return settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.worker_max_jobs)


def _limit_memory(settings: Settings) -> int:
    """Cap what this process may allocate (RLIMIT_DATA), so that a request for a model too big for the machine fails
    with a reason instead of making the kernel kill processes, the worker's or its neighbours'. Not on CUDA, whose
    driver maps memory that the limit would count. Returns the limit in MiB, 0 when none was set."""
    from model.device import pick_device

    if pick_device().type != "cpu":  # the device the job will train on
        return 0
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    limit_mb = settings.job_memory_mb or max(1024, total_mb * 3 // 4 // settings.worker_max_jobs)
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    limit = limit_mb * 2**20 if hard == resource.RLIM_INFINITY else min(limit_mb * 2**20, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return limit // 2**20


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def main(code: JobCode, kind: str, spec: Any, settings_values: dict[str, Any], reports: Any, mode: Any,
         attempt: int, worker: str, worker_pid: int) -> None:
    # Signals sent to the worker's whole process group (Ctrl-C in a terminal, `kill -TERM -<pgid>`, a supervisor
    # stopping a control group) reach this process too. Its parent decides when it stops (the mode flag: suspend
    # with a checkpoint, or cancel) and kills it past a grace period; the child dies with its parent. Stopping on
    # the signal itself would end the job as "the train process stopped unexpectedly" instead of suspending it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)  # the per-step check of the parent's pid covers the rest
    # The parent is the server of job processes, which outlives a worker killed with -9 while this process lives: the
    # worker itself is watched too. Dying kills the ranks of a run of several processes in turn (theirs is this).
    die_with(worker_pid)
    from model.device import configure_threads, keep_freed_memory

    settings = Settings(**settings_values)
    logging.basicConfig(level=settings.log_level.upper(), format=f"%(asctime)s child[{os.getpid()}] %(message)s")
    configure_threads(job_threads(settings))
    keep_freed_memory()  # a job's process reuses its step's buffers instead of faulting them in again
    memory_limit_mb = _limit_memory(settings)
    context = JobContext(settings, open_object_store(settings), reports, mode, attempt, worker)
    try:
        run_job(code, kind, spec, context, memory_limit_mb)
    finally:
        reports.close()
        reports.join_thread()


def run_job(code: JobCode, kind: str, spec: Any, context: JobContext, memory_limit_mb: int = 0,
            rank: bool = False) -> None:
    """Run a job's code and turn how it ended into what the parent needs: a failed fact with a reason, or a hand-back.
    In a rank of a run of several processes (`rank`), an unexpected error is raised on, so that the launcher starts
    the ranks again; those that do not report (all but rank 0) say nothing of the errors they share with it."""
    failed = FAILED_TYPE_FOR_KIND[kind]
    settings = context.settings
    try:
        code(spec, context)
    except StoreDown as error:
        if context.mode != CANCEL:  # a cancelled job ends cancelled (the parent says so); any other goes back
            wait_s = min(60.0, settings.object_store_patience_s)
            log.warning("job %s: %s; handing it back to the queue for %.0fs", spec.job_id, error, wait_s)
            context.suspended(retry_after_s=wait_s, reason=str(error))
    except Rejected as error:
        if not context.reporting:
            log.warning("job %s: this rank stops: %s", spec.job_id, error.reason)
        context.emit(failed, reason=error.reason, field=error.field, **about(failed, spec.model_id))
    except Exception as error:  # the parent turns this into a failed job; the worker itself stays up
        if memory_limit_mb and _out_of_memory(error):
            reason = (f"the model does not fit in the memory a job may use here ({memory_limit_mb} MiB, "
                      "LFZ_JOB_MEMORY_MB): make d_model, num_blocks, context_length or batch_size smaller")
            context.emit(failed, reason=reason, field="hyperparameters", **about(failed, spec.model_id))
            return
        if rank:
            raise
        log.exception("job %s failed", spec.job_id)
        context.emit(failed, reason=f"internal error: {type(error).__name__}: {error}",
                     **about(failed, spec.model_id))
