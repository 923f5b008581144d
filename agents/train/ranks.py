"""A training job of several processes (`processes` > 1) or hosts (`hosts` > 1): the job's child process starts
its ranks with torch.distributed's elastic launcher (torchrun's API: c10d rendezvous, the job id as its run id) and
waits for them; each rank joins the process group (gloo on CPU, NCCL with one GPU per rank) and runs the same
training code as a one-process job, with `World` saying which rank it is (model/distributed.py).

Several hosts: the job's own child hosts the rendezvous at LFZ_WORKER_ADDRESS, publishes it (TrainRendezvous) and
offers the job's helpers to other workers through the queue; a helper's child (`join`) starts that worker's ranks
against the same rendezvous. Training starts when every host has joined (or the job fails naming `hosts`). Each round
of the rendezvous meets in a store of its own, served by the launcher's first rank on a port chosen afresh, so a round
started again never reads what the one before published; the job's own host takes the first ranks.

Rank 0 alone reports (the others' facts are dropped) and writes to the object store; every rank reads the dataset
and the checkpoint it starts from. A rank that dies (or a helper's worker) makes the launchers stop the others and
start them all again, from the job's newest checkpoint, up to LFZ_TRAIN_MAX_RESTARTS times; past that the job fails
naming the rank. The ranks hold their child's mode flag, so a cancel or a hand-back reaches all of them, and they stop
at the same step; they die with their child (the parent-death signal), which dies with its worker.

Rank 0 sends its facts over a connection of its own to a relay in the child (`ReportRelay`), which puts them on the
child's report queue. A rank the launcher kills in the middle of a message breaks only its own connection: the next
generation's rank 0 connects afresh. (Sharing the child's queue instead, a rank killed while it wrote kept the
queue's lock, and no later fact of the job arrived.)
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
from datetime import timedelta
from multiprocessing.connection import AuthenticationError, Client, Connection, Listener
from typing import Any

from pydantic import BaseModel, ConfigDict

from agents.jobs.child import JobCode, JobContext, job_threads, run_job
from agents.jobs.kinds import JobSpec, helper_id
from infra.objectstore import open_object_store
from infra.process import die_with_parent, free_port
from infra.settings import Settings

log = logging.getLogger(__name__)
GROUP_TIMEOUT_S = 120  # a collective that waits longer than this for a rank that is gone fails the group
SHUTDOWN_S = 2  # the launcher kills the ranks it stops (one died) this long after asking


class ReportRelay:
    """In the child: takes the connections of the ranks that report (one per generation) and forwards what each
    sends to the child's report queue, in order, until that rank's connection ends (cleanly, or cut mid-message)."""

    def __init__(self, reports: Any):
        self.reports = reports
        self.authkey = secrets.token_bytes(32)
        self.listener = Listener(family="AF_UNIX", authkey=self.authkey)
        self.address = self.listener.address
        self.readers: list[threading.Thread] = []
        self.accepting = threading.Thread(target=self._accept, name="report-relay", daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                connection = self.listener.accept()
            except (OSError, EOFError):  # closed: no more generations
                return
            except AuthenticationError:
                continue
            reader = threading.Thread(target=self._forward, args=(connection,), daemon=True)
            reader.start()
            self.readers.append(reader)

    def _forward(self, connection: Connection) -> None:
        with connection:
            while True:
                try:
                    report = connection.recv()
                except (EOFError, OSError):
                    return
                except Exception:  # a message cut short when its rank was killed: the rest of it will not come
                    log.warning("a rank's report was cut short (the rank was stopped while it reported)")
                    return
                self.reports.put(report)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, and wait for what the ranks sent (their connections end when they exit)."""
        self.listener.close()
        for reader in self.readers:
            reader.join(timeout_s)


class RankReports:
    """What a rank reports through (JobContext's `reports`): its connection to the child's relay, opened at the first
    report."""

    def __init__(self, address: str, authkey: bytes):
        self.address, self.authkey = address, authkey
        self.connection: Connection | None = None

    def put(self, report: Any) -> None:
        if self.connection is None:
            self.connection = Client(self.address, family="AF_UNIX", authkey=self.authkey)
        self.connection.send(report)


class Join(BaseModel):
    """Where a helper's ranks join a run of several hosts: the run's rendezvous."""

    model_config = ConfigDict(frozen=True)

    endpoint: str


def launch(code: JobCode, spec: JobSpec, job: JobContext, join: Join | None = None) -> None:
    """In the job's child: start `spec.processes` ranks, each running `code` on `spec`, and wait for them all. With
    `spec.hosts` > 1, the job's own run (`join` None) hosts the rendezvous and offers the job to other workers; a
    helper's run joins that rendezvous (`join`)."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError, RendezvousTimeoutError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from events import Rejected, TrainRendezvous

    settings, hosts, leading = job.settings, spec.hosts, join is None
    address = (settings.worker_address or socket.gethostname()) if hosts > 1 else "127.0.0.1"
    if join is None:
        join = Join(endpoint=f"{address}:{free_port('')}")
        if hosts > 1:
            job.emit(TrainRendezvous, attempt=job.attempt, worker=job.worker, endpoint=join.endpoint, hosts=hosts,
                     processes=spec.processes, join_timeout_s=settings.train_join_timeout_s)
            job.offer("train-join", [{**spec.model_dump(mode="json"), "job_id": helper_id(spec.job_id, job.attempt, i),
                                      "join": join.model_dump()} for i in range(1, hosts)])
    # Each round of the rendezvous gets a store of its own (rank 0 serves it on a fresh port), so the ranks of a
    # round started again never read what the round before published.
    os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    config = LaunchConfig(
        min_nodes=hosts, max_nodes=hosts, nproc_per_node=spec.processes, run_id=spec.job_id,
        rdzv_backend="c10d", rdzv_endpoint=join.endpoint, local_addr=address,
        rdzv_configs={"is_host": leading, "join_timeout": int(settings.train_join_timeout_s),
                      "last_call_timeout": 1},
        max_restarts=settings.train_max_restarts, monitor_interval=0.5, start_method="spawn",
        logs_specs=DefaultLogsSpecs(), shutdown_timeout=SHUTDOWN_S,
        # The child ignores the signals sent to the worker's process group (its parent decides when it stops, through
        # the mode flag); the launcher must not turn them into the end of the ranks either.
        signals_to_handle="SIGUSR2",
    )
    relay = ReportRelay(job._reports)
    try:
        elastic_launch(config, rank_main)(code, type(spec), spec.model_dump(mode="json"),
                                          settings.model_dump(mode="json"), (relay.address, relay.authkey),
                                          job._mode, job.attempt, job.worker, leading)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        raise Rejected(f"training rank {rank} failed {settings.train_max_restarts + 1} time(s), the last time "
                       f"with exit code {failure.exitcode} ({failure.message or 'no message'}); see the worker's "
                       "log") from None
    except RendezvousTimeoutError:
        raise Rejected(f"hosts: the {hosts} hosts of the job did not all join its rendezvous at {join.endpoint} "
                       f"within {settings.train_join_timeout_s:g}s (LFZ_TRAIN_JOIN_TIMEOUT_S): not enough workers are "
                       "free, or they cannot reach this one (LFZ_WORKER_ADDRESS)", "hosts") from None
    except RendezvousError as error:
        if leading:
            raise
        # A helper whose run has ended, or whose run's worker is gone: nothing to join any more.
        log.info("job %s: the run at %s is not there to join (%s)", spec.job_id, join.endpoint, error)
    finally:
        relay.close()


def rank_main(code: JobCode, spec_class: type[JobSpec], spec_values: dict, settings_values: dict,
              relay: tuple[str, bytes], mode: Any, attempt: int, worker: str, leading: bool) -> None:
    """One rank, in a process the launcher spawned (its ranks and MASTER_* in its environment)."""
    import torch.distributed as dist

    from model.device import configure_threads
    from model.distributed import backend_for

    # A process group of its own: what is sent to the worker's group (a stop, Ctrl-C) does not reach the ranks, whose
    # job the parent stops through the mode flag; what the launcher sends to a rank (SIGTERM, when another died) ends
    # it at once, wherever it is (a rank killed while it reports breaks only its own connection to the relay).
    os.setpgrp()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    settings = Settings(**settings_values)
    store, rank, size = meeting(leading)
    logging.basicConfig(level=settings.log_level.upper(),
                        format=f"%(asctime)s rank{rank}[{os.getpid()}] %(message)s")
    device = rank_device()
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    configure_threads(max(1, job_threads(settings) // int(os.environ["LOCAL_WORLD_SIZE"])))
    dist.init_process_group(backend_for(device), store=dist.PrefixStore("group", store), rank=rank, world_size=size,
                            timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    try:
        context = JobContext(settings, open_object_store(settings), RankReports(*relay), mode, attempt, worker,
                             reporting=leading and rank == 0, lead=leading)
        run_job(code, "train", spec_class.model_validate(spec_values), context, rank=True)
    finally:
        dist.destroy_process_group()


def meeting(leading: bool) -> tuple[Any, int, int]:
    """This round's store, and this rank's place in the world: the job's own host first (its first rank reports the
    job's facts and writes its checkpoints), then the helpers' hosts in the launcher's order."""
    import torch.distributed as dist

    env = os.environ
    launcher_rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), size, is_master=launcher_rank == 0,
                          timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    host, local, per_host = int(env["GROUP_RANK"]), int(env["LOCAL_RANK"]), int(env["LOCAL_WORLD_SIZE"])
    if leading and local == 0:
        store.set("lead", str(host))
    lead = int(store.get("lead"))
    place = 0 if host == lead else host + 1 if host < lead else host
    return store, place * per_host + local, size


def rank_device() -> Any:
    """This rank's device: its own GPU (LOCAL_RANK, set by the launcher) when there are GPUs, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}")
    return torch.device("cpu")


def rank_names(device: Any) -> list[str]:
    """Every rank's `host/device`, in rank order (a collective: every rank calls it)."""
    import torch.distributed as dist

    names: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(names, f"{socket.gethostname()}/{device}")
    return [str(name) for name in names]
