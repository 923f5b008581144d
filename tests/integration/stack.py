"""Processes of the system under test (agents workers, gateways), started as a user would start them.

Each runs in its own process group with its output in a log file, so a failing test can show what it said.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from events import TERMINAL_TYPES
from infra.kafka import stop_consumer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def start_gateway(name: str, env: dict[str, str], log_dir: Path, timeout: float = 60) -> tuple[Process, str]:
    port = free_port()
    process = Process(name, ["-m", "gateway"], {**env, "LFZ_PORT": str(port)}, log_dir)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _healthy(url, process), timeout, f"gateway {name} to answer /health")
    return process, url


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


def child_processes(pid: int, match: str = "spawn_main") -> list[int]:
    """PIDs whose parent is `pid` and whose command line contains `match` (from /proc). The default picks the
    job processes that multiprocessing spawns, not its resource tracker."""
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
                        value = json.loads(message.value)
                        if where(value):
                            seen.append(value)
                if until(seen):
                    return seen
            raise AssertionError(f"timed out on {topic}; saw {[m.get('type') for m in seen]}")
        finally:
            await stop_consumer(consumer)

    async def job(self, job_id: str, timeout: float = 90) -> list[dict]:
        """A job's facts from the log, until its terminal one."""
        return await self.read("job.events", lambda seen: any(e["type"] in TERMINAL_TYPES for e in seen),
                               timeout, where=lambda e: e.get("job_id") == job_id)
