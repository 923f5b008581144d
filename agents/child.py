"""The spawned child process that runs one train or evaluate job, reporting facts to its parent.

It never touches Kafka or the database: it reads and writes the object store, and sends each fact (a type name
and its fields) over a multiprocessing queue. The parent numbers, publishes and fences them. If the parent dies,
the child dies too (Linux parent-death signal, and a check of the parent's pid at every step).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from typing import Any

RUN, CANCEL, SUSPEND = 0, 1, 2
log = logging.getLogger("agents.child")


class JobError(Exception):
    """A failure with a reason a person can act on, and the field of the request at fault."""

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason, self.field = reason, field


class Reporter:
    def __init__(self, reports: Any, mode: Any):
        self._reports = reports
        self._mode = mode
        self._parent = os.getppid()

    def emit(self, type_name: str, **fields: Any) -> None:
        self._reports.put({"type": type_name, "fields": fields})

    def suspended(self) -> None:
        self._reports.put({"suspended": True})

    @property
    def mode(self) -> int:
        return int(self._mode.value)

    @property
    def orphaned(self) -> bool:
        return os.getppid() != self._parent

    def should_stop(self) -> bool:
        return self.mode != RUN or self.orphaned


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass  # the per-step pid check still stops an orphan


def _limit_memory(settings: Any) -> int:
    """Cap what this process may allocate (RLIMIT_DATA), so that a request for a model too big for the machine fails
    with a reason instead of making the kernel kill processes, the worker's or its neighbours'. Not on CUDA, whose
    driver maps memory that the limit would count. Returns the limit in MiB, 0 when none was set."""
    import resource

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


def main(kind: str, spec: dict[str, Any], settings_values: dict[str, Any], reports: Any, mode: Any) -> None:
    # Signals sent to the worker's whole process group (Ctrl-C in a terminal, `kill -TERM -<pgid>`, a supervisor
    # stopping a control group) reach this process too. Its parent decides when it stops (the mode flag: suspend
    # with a checkpoint, or cancel) and kills it past a grace period; the child dies with its parent. Stopping on
    # the signal itself would end the job as "the train process stopped unexpectedly" instead of suspending it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    from infra.objectstore import open_object_store
    from infra.settings import Settings
    from model.device import configure_threads, keep_freed_memory

    settings = Settings(**settings_values)
    logging.basicConfig(level=settings.log_level.upper(), format=f"%(asctime)s child[{os.getpid()}] %(message)s")
    configure_threads(settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.worker_max_jobs))
    keep_freed_memory()  # a job's process reuses its step's buffers instead of faulting them in again
    memory_limit_mb = _limit_memory(settings)
    reporter = Reporter(reports, mode)
    failed = "TrainFailed" if kind == "train" else "EvaluationFailed"
    try:
        store = open_object_store(settings)
        if kind == "train":
            from agents.training_job import run_training

            run_training(spec, settings, store, reporter)
        else:
            from agents.evaluation_job import run_evaluation

            run_evaluation(spec, store, reporter)
    except JobError as error:
        reporter.emit(failed, reason=error.reason, field=error.field, model_id=spec.get("model_id"))
    except Exception as error:  # the parent turns this into a failed job; the worker itself stays up
        if memory_limit_mb and _out_of_memory(error):
            reason = (f"the model does not fit in the memory a job may use here ({memory_limit_mb} MiB, "
                      "LFZ_JOB_MEMORY_MB): make d_model, num_blocks, context_length or batch_size smaller")
            reporter.emit(failed, reason=reason, field="hyperparameters", model_id=spec.get("model_id"))
            return
        log.exception("job %s failed", spec.get("job_id"))
        reporter.emit(failed, reason=f"internal error: {type(error).__name__}: {error}", model_id=spec.get("model_id"))
    finally:
        reports.close()
        reports.join_thread()
