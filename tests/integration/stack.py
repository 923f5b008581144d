"""Processes of the system under test (agents workers, gateways), started as a user would start them.

Each runs in its own process group with its output in a log file, so a failing test can show what it said.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import select

from events import TERMINAL_TYPES, DecodeError
from events.codec import parse_json
from cli.client import ApiError, Client
from infra.db import create_engine, sessionmaker
from infra.db.tables import JobEventRow
from infra.joblog import read_topic
from infra.kafka import stop_consumer
from infra.settings import Settings
from infra.process import free_port



class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "ab")
        self.popen = subprocess.Popen([sys.executable, *args], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """kill -9 of the process alone (its children are left to notice on their own)."""
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        if not self.log.closed:
            self.log.close()


def start_worker(name: str, env: dict[str, str], log_dir: Path) -> Process:
    return Process(name, ["-m", "agents", "worker"], {**env, "LFZ_WORKER_ID": name}, log_dir)


def start_gateway(name: str, env: dict[str, str], log_dir: Path, timeout: float = 60,
                  port: int | None = None) -> tuple[Process, str]:
    """A gateway on `port` (a free one when None), once it answers /health."""
    port = port or free_port()
    process = Process(name, ["-m", "gateway"], {**env, "LFZ_PORT": str(port)}, log_dir)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _healthy(url, process), timeout, f"gateway {name} to answer /health")
    return process, url


def wait_for_job(url: str, job_id: str, timeout: float = 120) -> dict:
    """The job as the gateway shows it, once the projection has it (a 202 may come before the job is recorded)."""
    def shown() -> dict | None:
        try:
            with Client(url) as client:
                return client.get_job(job_id)
        except ApiError as error:
            if error.status != 404:
                raise
            return None

    return wait_until(shown, timeout, f"job {job_id} to be recorded")


def _healthy(url: str, process: Process) -> bool:
    if not process.alive():
        raise AssertionError(f"{process.name} exited:\n{process.tail()}")
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def job_processes(worker_pid: int) -> list[int]:
    """A worker's job processes: those its server of job processes (multiprocessing's forkserver) forked."""
    servers = child_processes(worker_pid, "forkserver")
    return [pid for server in servers for pid in child_processes(server, "forkserver")]


def child_processes(pid: int, match: str = "spawn_main") -> list[int]:
    """PIDs whose parent is `pid` and whose command line contains `match` (from /proc). The default picks the
    processes that multiprocessing spawns (a job's DDP ranks), not its resource tracker."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and match.encode() in (entry / "cmdline").read_bytes():
                children.append(int(entry.name))
    return children


class Follower(threading.Thread):
    """An SSE client in a thread, following one job through a gateway to its end with `Client.follow_job` (which
    resumes with Last-Event-ID when the connection drops), noting when each event arrived (time.monotonic())."""

    def __init__(self, url: str, job_id: str, patience_s: float = 120.0, retry_delay_s: float = 0.2):
        super().__init__(name=f"follow-{job_id}", daemon=True)
        self.url, self.job_id = url, job_id
        self.patience_s, self.retry_delay_s = patience_s, retry_delay_s
        self.arrivals: list[tuple[float, dict]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Client(self.url) as client:
                for event in client.follow_job(self.job_id, patience_s=self.patience_s,
                                               retry_delay_s=self.retry_delay_s):
                    self.arrivals.append((time.monotonic(), event))
        except BaseException as exc:  # handed to the test by `events()`
            self.error = exc

    def saw(self, type_: str) -> bool:
        if self.error is not None:
            raise AssertionError(f"following {self.job_id} failed: {self.error!r}") from self.error
        return any(event["type"] == type_ for _, event in list(self.arrivals))

    def events(self, timeout: float) -> list[dict]:
        """Every event, once the stream has reached the job's terminal one."""
        self.join(timeout)
        if self.error is not None:
            raise AssertionError(f"following {self.job_id} failed: {self.error!r}") from self.error
        if self.is_alive():
            raise AssertionError(f"following {self.job_id}: no terminal event within {timeout}s; "
                                 f"saw {[e['seq'] for _, e in self.arrivals]}")
        return [event for _, event in self.arrivals]


class Bus:
    """A test's view of the real Kafka: produce raw messages, read a job's facts back from the log."""

    def __init__(self, bootstrap: str, prefix: str):
        self.bootstrap = bootstrap
        self.prefix = prefix

    async def produce(self, topic: str, value: bytes | dict, key: str | None = None) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await producer.start()
        try:
            data = value if isinstance(value, bytes) else json.dumps(value).encode()
            await producer.send_and_wait(self.prefix + topic, data, key=key.encode() if key else None)
        finally:
            await producer.stop()

    async def read(self, topic: str, until: Callable[[list[dict]], bool], timeout: float = 90,
                   where: Callable[[dict], bool] = lambda _: True) -> list[dict]:
        """Messages of a topic from its beginning, as JSON, until `until(messages)` holds."""
        consumer = AIOKafkaConsumer(self.prefix + topic, bootstrap_servers=self.bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        seen: list[dict] = []
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    for message in messages:
                        try:  # a test may have put hostile bytes on the topic
                            value = parse_json(message.value)
                        except DecodeError:
                            continue
                        if not isinstance(value, dict):
                            continue
                        if where(value):
                            seen.append(value)
                if until(seen):
                    return seen
            raise AssertionError(f"timed out on {topic}; saw {[m.get('type') for m in seen]}: "
                                 f"{[m.get('error') or m.get('seq') for m in seen]}")
        finally:
            await stop_consumer(consumer)

    async def all_facts(self) -> list[dict]:
        """Every fact on the job-events topic, from its beginning to its end as it is now (the reader `lfz replay`
        uses, which leaves out what does not decode)."""
        read = await read_topic(Settings(kafka_url=f"kafka://{self.bootstrap}", topic_prefix=self.prefix))
        return [recorded.event.model_dump(mode="json") for recorded in read.facts]

    async def job(self, job_id: str, timeout: float = 90) -> list[dict]:
        """A job's facts from the log, until its terminal one."""
        return await self.job_until(job_id, lambda seen: any(e["type"] in TERMINAL_TYPES for e in seen), timeout)

    async def job_until(self, job_id: str, until: Callable[[list[dict]], bool], timeout: float = 90) -> list[dict]:
        """A job's facts from the log, until `until(facts)` holds."""
        return await self.read("job.events", until, timeout, where=lambda e: e.get("job_id") == job_id)


def distinct(events: list[dict]) -> list[dict]:
    """Facts with repeats removed (a retried send may deliver one twice, under the same event id), in log order."""
    seen, out = set(), []
    for event in events:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            out.append(event)
    return out


async def recorded(database_url: str, job_id: str) -> list[tuple[str, int, str]]:
    """`(event id, seq, type)` of the job's facts in the database's job_events table, in seq order."""
    engine = create_engine(database_url)
    try:
        async with sessionmaker(engine)() as session:
            rows = await session.execute(select(JobEventRow.event_id, JobEventRow.seq, JobEventRow.type)
                                         .where(JobEventRow.job_id == job_id).order_by(JobEventRow.seq))
            return [tuple(row) for row in rows.all()]
    finally:
        await engine.dispose()


async def poll(fetch: Callable[[], Any], predicate: Callable[[Any], bool], interval: float = 0.3) -> Any:
    """Await `fetch()` until `predicate` holds for its value; bound it with asyncio.wait_for."""
    while True:
        value = await fetch()
        if predicate(value):
            return value
        await asyncio.sleep(interval)
