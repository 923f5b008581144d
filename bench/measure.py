"""What the benchmarks measure with: percentiles of a sample, and the memory and CPU time of the processes they run.

`ProcessMonitor` samples from a thread, so a process's peak is seen even when it is gone by the end (a training
child), and the CPU seconds of each process are read at the end as a difference from the start, so time spent
before the measurement (imports, a broker's start) does not count.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import psutil

QUANTILES = (50, 95, 99)


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between the two nearest ranks (numpy's default)."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be between 0 and 100, got {q}")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty sample")
    if any(math.isnan(v) for v in ordered):
        raise ValueError("percentile of a sample that contains NaN")
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentiles(values: Iterable[float], quantiles: Iterable[float] = QUANTILES) -> dict[str, float]:
    """`{"p50": ..., "p95": ..., "p99": ..., "mean": ..., "n": ...}`; only `{"n": 0}` for an empty sample."""
    sample = list(values)
    if not sample:
        return {"n": 0}
    out = {f"p{q:g}": percentile(sample, q) for q in quantiles}
    return {**out, "mean": statistics.fmean(sample), "n": len(sample)}


def jain_index(shares: Iterable[float]) -> float:
    """Jain's fairness index of what each participant got: 1.0 when all got the same, 1/n when one got everything."""
    values = list(shares)
    if not values:
        raise ValueError("fairness of no participants")
    if any(v < 0 for v in values):
        raise ValueError(f"shares must not be negative, got {values}")
    total = sum(values)
    if total == 0:
        return 1.0  # nobody got anything: equal, if not useful
    return total * total / (len(values) * sum(v * v for v in values))


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port (a Kafka broker we did not start), or None when it cannot be seen."""
    try:
        connections = psutil.net_connections("tcp")
    except psutil.AccessDenied:
        return None
    for connection in connections:
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port:
            return connection.pid
    return None


def local_broker_pid(bootstrap: str) -> int | None:
    """The process of the first broker of `host:port[,...]` when it runs on this machine, else None."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if host.strip("[]") not in ("127.0.0.1", "localhost", "::1") or not port.isdigit():
        return None
    return listening_pid(int(port))


@dataclass
class _Watched:
    pid: int
    process: psutil.Process | None
    cpu_start: float = 0.0
    children_cpu_start: float = 0.0
    cpu_s: float = 0.0
    children_cpu_s: float = 0.0
    rss_mb: float = float("nan")
    peak_rss_mb: float = float("nan")
    children_peak_rss_mb: float = 0.0
    seen: bool = False
    gone: bool = False


def _cpu(times: Any) -> float:
    return times.user + times.system


def _children_cpu(times: Any) -> float:
    """CPU seconds of the children the process has waited for (a worker's finished training children)."""
    return times.children_user + times.children_system


@dataclass
class ProcessMonitor:
    """Peak and last resident memory, and CPU seconds, of named processes and their children, sampled from a thread.

        with ProcessMonitor({"gateway": pid, "worker-1": pid}) as monitor:
            ...
        monitor.report()  # {"gateway": {"rss_mb": ..., "peak_rss_mb": ..., "cpu_s": ..., ...}, ...}
    """

    pids: dict[str, int]
    interval_s: float = 0.5
    _watched: dict[str, _Watched] = field(default_factory=dict, init=False)
    _done: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def start(self) -> ProcessMonitor:
        for name, pid in self.pids.items():
            try:
                process = psutil.Process(pid)
                times = process.cpu_times()
                watched = _Watched(pid, process, cpu_start=_cpu(times), children_cpu_start=_children_cpu(times))
            except psutil.Error:
                watched = _Watched(pid, None, gone=True)
            self._watched[name] = watched
        self.sample()
        self._thread = threading.Thread(target=self._run, name="bench-process-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._done.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        for watched in self._watched.values():
            if watched.gone or watched.process is None:
                continue
            try:
                with watched.process.oneshot():
                    rss = watched.process.memory_info().rss / 2**20
                    times = watched.process.cpu_times()
                children = 0.0
                for child in watched.process.children(recursive=True):
                    try:
                        children += child.memory_info().rss / 2**20
                    except psutil.Error:  # ended between the listing and the read
                        pass
            except psutil.Error:
                watched.gone = True
                continue
            watched.seen = True
            watched.rss_mb = rss
            watched.peak_rss_mb = rss if math.isnan(watched.peak_rss_mb) else max(watched.peak_rss_mb, rss)
            watched.children_peak_rss_mb = max(watched.children_peak_rss_mb, children)
            watched.cpu_s = _cpu(times) - watched.cpu_start
            watched.children_cpu_s = _children_cpu(times) - watched.children_cpu_start

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def report(self) -> dict[str, dict[str, float | int | None]]:
        def figure(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 1)

        return {name: {"pid": w.pid, "rss_mb": figure(w.rss_mb), "peak_rss_mb": figure(w.peak_rss_mb),
                       "children_peak_rss_mb": round(w.children_peak_rss_mb, 1), "cpu_s": round(w.cpu_s, 2),
                       "children_cpu_s": round(w.children_cpu_s, 2)}
                for name, w in self._watched.items() if w.seen}

    def __enter__(self) -> ProcessMonitor:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
