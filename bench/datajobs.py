"""The data benchmark's measurements, one job at a time through the HTTP API of a bench stack: an upload, a
tokenization, a training run (and `bench model train` beside it), each with the peak resident memory of the processes
that did the work, sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.stack import BenchStack, child_env
from cli.client import ApiError, Client
from cli.uploads import upload_file
from infra.objectstore import artifacts, open_object_store

ROOT = Path(__file__).resolve().parents[1]


def say(line: str) -> None:
    print(f"  data: {line}", file=sys.stderr, flush=True)


class Peaks:
    """Peak resident memory (MiB) of the gateway, the worker and the worker's job processes, sampled from a thread
    every `interval_s`, per phase of the benchmark (`with peaks.phase() as peak: ...`, then `peak["job"]`).

    The job processes are those that the worker's server of job processes (multiprocessing's forkserver) forked; the
    largest of them is reported, and the server's own size as `job_server`."""

    def __init__(self, gateway: int, worker: int, interval_s: float = 0.2):
        self.processes = {"gateway": psutil.Process(gateway), "worker": psutil.Process(worker)}
        self.interval_s = interval_s
        self._servers: list[psutil.Process] = []
        self._peaks: dict[str, float] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-data-peaks", daemon=True)

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.interval_s):
            self.sample()

    def _job_servers(self) -> list[psutil.Process]:
        if not self._servers or not all(s.is_running() for s in self._servers):
            self._servers = [c for c in self.processes["worker"].children() if "forkserver" in " ".join(c.cmdline())]
        return self._servers

    def now(self) -> dict[str, float]:
        """Resident memory (MiB) now: gateway, worker, job_server, and the largest job process's (`job`, and
        `job_anon` for its anonymous part: the heap, not the pages of mapped files such as token shards)."""
        sizes: dict[str, float] = {}
        jobs: list[tuple[float, float]] = []
        try:
            for name, process in self.processes.items():
                sizes[name] = process.memory_info().rss / 2**20
            for server in self._job_servers():
                sizes["job_server"] = server.memory_info().rss / 2**20
                for job in server.children():
                    try:
                        rss = job.memory_info().rss / 2**20
                        if rss > 0:  # 0: an ended process its parent has not reaped yet
                            jobs.append((rss, anonymous_mb(job.pid)))
                    except (psutil.Error, OSError):  # ended between the listing and the read
                        pass
        except psutil.Error:  # a process of the stack is gone: the stack's own check says so
            pass
        if jobs:
            sizes["job"], sizes["job_anon"] = max(jobs)
        return sizes

    def sample(self) -> None:
        sizes = self.now()
        with self._lock:
            for name, value in sizes.items():
                self._peaks[name] = max(self._peaks.get(name, 0.0), value)

    @contextmanager
    def phase(self) -> Iterator[dict[str, float]]:
        with self._lock:
            self._peaks = {}
        self.sample()
        out: dict[str, float] = {}
        try:
            yield out
        finally:
            self.sample()
            with self._lock:
                out.update({name: round(value, 1) for name, value in self._peaks.items()})


def anonymous_mb(pid: int) -> float:
    """RssAnon of /proc/PID/status in MiB: the resident memory that no file backs."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def step_times(progress: Sequence[tuple[int, float]]) -> dict[str, float | None]:
    """Milliseconds per step from (step, elapsed_s) reports: over everything after the first report (which carries
    the run's start: the first step, the allocator's warm-up), and the median of the intervals between reports."""
    reports = sorted(progress)[1:]
    intervals = [1000 * (b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(reports) if b[0] > a[0]]
    if not intervals:
        return {"step_ms": None, "step_ms_median": None}
    return {"step_ms": 1000 * (reports[-1][1] - reports[0][1]) / (reports[-1][0] - reports[0][0]),
            "step_ms_median": statistics.median(intervals)}


def _follow(client: Client, job_id: str, timeout_s: float) -> list[dict[str, Any]]:
    """Every event of the job until its end; raises when it did not complete. A job the gateway answered 202 for
    may not be recorded yet (a busy machine): its events are asked for again until it is."""
    deadline = time.monotonic() + timeout_s
    events: list[dict[str, Any]] = []
    while True:
        try:
            for event in client.follow_job(job_id, patience_s=120):
                events.append(event)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} did not end within {timeout_s:.0f}s")
            break
        except ApiError as error:
            if error.status != 404 or events or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    if not events or not events[-1]["type"].endswith("Completed"):
        last = events[-1] if events else {}
        raise RuntimeError(f"job {job_id} ended with {last.get('type')}: {last.get('reason') or last}")
    return events


def _one(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next((e for e in events if e["type"] == kind), {})


@dataclass
class Bench:
    """One run: its arguments, the stack, the API client, the memory sampler, and what it made (deleted at the end)."""

    args: argparse.Namespace
    stack: BenchStack
    client: Client
    peaks: Peaks
    nonce: str
    datasets: list[str]
    models: list[str]

    def timeout(self, size: int) -> float:
        return 600 + size / 1e6  # a second per MB on top: BPE at a fifth of its target still ends

    def upload(self, path: Path, label: str) -> tuple[str, dict[str, Any]]:
        size = path.stat().st_size
        idle = self.peaks.now().get("gateway")
        with self.peaks.phase() as peak:
            started = time.perf_counter()
            view = upload_file(self.client, path, name=f"bench-data-{self.nonce}-{label}.txt", fmt="text",
                               compression="none", text_column="text", show_progress=False)
            wall = time.perf_counter() - started
        if view.get("reused"):
            raise RuntimeError(f"the gateway reused dataset {view['id']}: the corpus was not new")
        self.datasets.append(view["id"])
        return view["id"], {"bytes": size, "wall_s": round(wall, 2), "mb_per_s": round(size / wall / 1e6, 1),
                            "part_bytes": self.stack.settings.upload_part_bytes, "gateway_idle_rss_mb": idle,
                            "gateway_peak_rss_mb": peak.get("gateway"), "worker_peak_rss_mb": peak.get("worker")}

    def tokenize(self, dataset_id: str, size: int, kind: str) -> dict[str, Any]:
        options = {"vocab_size": self.args.bpe_vocab} if kind == "bpe" else {}
        sample = self.args.bpe_sample if kind == "bpe" else None
        with self.peaks.phase() as peak:
            started = time.perf_counter()
            job_id = self.client.tokenize_dataset(dataset_id, kind, options, sample)["job_id"]
            events = _follow(self.client, job_id, self.timeout(size))
            wall = time.perf_counter() - started
        done, made = events[-1], _one(events, "DatasetTokenized")
        if made.get("reused"):
            raise RuntimeError(f"tokenize job {job_id} reused an earlier tokenization: nothing was measured")
        phases: dict[str, float] = {}
        for event in events:
            if event["type"] == "TokenizeProgress":
                phases.setdefault(event["phase"], event["elapsed_s"])
        names = list(phases)
        ends = [phases[n] for n in names[1:]] + [done["wall_s"]]
        self._until_recorded(dataset_id, done["tokenization_id"])
        return {"tokenizer": kind, "options": options, "sample_bytes": sample, "job_id": job_id,
                "wall_s": round(done["wall_s"], 2), "mb_per_s": done.get("mb_per_s"),
                "tokens_per_s": done.get("tokens_per_s"), "tokens": done["tokens"],
                "vocab_size": made.get("vocab_size"), "shards": made.get("shards"), "dtype": made.get("dtype"),
                "submit_to_end_s": round(wall, 2),
                "phases_s": {n: round(end - phases[n], 2) for n, end in zip(names, ends, strict=True)},
                "job_peak_rss_mb": peak.get("job"), "job_peak_anon_rss_mb": peak.get("job_anon"),
                "worker_peak_rss_mb": peak.get("worker")}

    def _until_recorded(self, dataset_id: str, tokenization_id: str, timeout_s: float = 60) -> None:
        """A training run reuses a tokenization the database lists: wait for the projection to list this one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.client.get_dataset(dataset_id).get("tokenizations") or []
            if any(t["id"] == tokenization_id and t["status"] == "completed" for t in found):
                return
            time.sleep(0.2)
        raise TimeoutError(f"tokenization {tokenization_id} was not recorded within {timeout_s:.0f}s")

    def train(self, dataset_id: str, size: int, label: str, run: int, steps: int | None = None) -> dict[str, Any]:
        hp = {"preset": "cpu-baby", "max_iters": steps or self.args.steps}
        with self.peaks.phase() as peak:
            created = self.client.create_model(f"bench-data-{self.nonce}-{label}-{run}", dataset_id=dataset_id,
                                               tokenizer="char", hyperparameters=hp)
            self.models.append(created["model_id"])
            events = _follow(self.client, created["job_id"], self.timeout(size))
        started, done = _one(events, "TrainStarted"), events[-1]
        progress = [(e["step"], e["elapsed_s"]) for e in events if e["type"] == "TrainProgress"]
        return {**step_times(progress), "tokens_per_s": done.get("tokens_per_s"), "wall_s": round(done["wall_s"], 2),
                "steps": done.get("final_step"), "vocab_size": started.get("vocab_size"),
                "parameters": started.get("num_parameters"),
                "tokenized_again": any(e["type"] == "DatasetTokenized" and not e.get("reused") for e in events),
                "peak_rss_mb": peak.get("job"), "peak_anon_rss_mb": peak.get("job_anon"),
                "job_server_rss_mb": peak.get("job_server")}

    def warm_up(self, path: Path) -> None:
        """One small dataset through every step first: the first request, job and training run of a fresh stack
        pay for connections, topics and the allocator's first growth, which no figure should carry."""
        dataset_id, _ = self.upload(path, "warm-up")
        self.tokenize(dataset_id, path.stat().st_size, "char")
        self.train(dataset_id, path.stat().st_size, "warm-up", 0, steps=20)

    def model_train(self, path: Path) -> dict[str, Any]:
        """`python -m bench model train` on the same text, preset and steps, in a process of its own."""
        command = [sys.executable, "-m", "bench", "model", "train", "--data", str(path), "--preset", "cpu-baby",
                   "--tokenizer", "char", "--max-iters", str(self.args.steps), "--json"]
        done = subprocess.run(command, capture_output=True, text=True, env=child_env(self.stack.settings), cwd=ROOT,
                              timeout=1800, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"bench model train failed: {done.stderr.strip().splitlines()[-1:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return {key: result.get(key) for key in ("tokens_per_s", "ms_per_iter", "ms_per_iter_median", "train_s",
                                                 "vocab_size", "parameters", "threads")}

    def clean_up(self) -> None:
        store = open_object_store(self.stack.settings)
        for model_id in self.models:
            self._quietly(lambda m=model_id: self.client.delete_model(m))
            self._quietly(lambda m=model_id: store.delete_prefix(artifacts.model_prefix(m)))
        for dataset_id in self.datasets:
            self._quietly(lambda d=dataset_id: self.client.delete_dataset(d))
            self._quietly(lambda d=dataset_id: store.delete_prefix(artifacts.tokens_prefix(d)))
            self._quietly(lambda d=dataset_id: store.delete(artifacts.dataset_key(d)))

    @staticmethod
    def _quietly(call: Any) -> None:
        try:
            call()
        except Exception as error:  # what is left is named; the figures are measured already
            say(f"clean-up: {type(error).__name__}: {error}")
