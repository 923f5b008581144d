"""Gateway processes and an agents worker against the real servers of `make services`, for one test session.

Everything shares one topic prefix of its own, so parallel sessions never meet. Three gateway processes run:
two without auth (to serve one job's stream from either), one with two API keys.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.db import migrate
from infra.process import free_port
from infra.settings import Settings

KEYS = ("key-alice-0123456789", "key-bob-9876543210")
OPERATOR_KEY = "key-operator-5555555555"



class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.popen = subprocess.Popen([sys.executable, *args], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()


@pytest.fixture(scope="session")
def session_prefix() -> str:
    return f"lfz.test.gw{uuid.uuid4().hex[:10]}."


@pytest.fixture(scope="session")
def stack_env(settings: Settings, session_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    migrate(settings.resolved_database_url, quiet=True)  # idempotent: brings the shared database to head
    env = {k: v for k, v in os.environ.items() if not k.startswith("LFZ_API_KEYS")}
    env.update(LFZ_TOPIC_PREFIX=session_prefix, LFZ_DATA_DIR=str(tmp_path_factory.mktemp("lfz")),
               LFZ_SUBMIT_WAIT_S="10", LFZ_REQUEST_TIMEOUT_S="60", LFZ_LOG_LEVEL="WARNING",
               LFZ_PROGRESS_EVERY_STEPS="5", LFZ_PROGRESS_EVERY_S="0.2")
    return env


def _start_gateway(name: str, env: dict[str, str], log_dir: Path, **extra: str) -> tuple[Process, str]:
    port = free_port()
    process = Process(name, ["-m", "gateway"], {**env, "LFZ_PORT": str(port), **extra}, log_dir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            pytest.fail(f"gateway {name} exited:\n{process.tail()}", pytrace=False)
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.stop()
    pytest.fail(f"gateway {name} did not become healthy:\n{process.tail()}", pytrace=False)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def gateways(stack_env: dict[str, str], log_dir: Path) -> Iterator[dict[str, str]]:
    """Base URLs: `open` and `open2` without auth, `auth` with KEYS and OPERATOR_KEY (and its access log on)."""
    started: list[Process] = []
    urls: dict[str, str] = {}
    try:
        for name, extra in (("open", {}), ("open2", {}), ("auth", {"LFZ_API_KEYS": ",".join(KEYS), "LFZ_OPERATOR_KEYS": OPERATOR_KEY,
                                                       "LFZ_LOG_LEVEL": "INFO"})):
            process, urls[name] = _start_gateway(name, stack_env, log_dir, **extra)
            started.append(process)
        yield urls
    finally:
        for process in started:
            process.stop()


@pytest.fixture(scope="session")
def worker(stack_env: dict[str, str], gateways: dict[str, str], log_dir: Path) -> Iterator[Process]:
    """One agents worker (`python -m agents worker`) on the session's topics."""
    process = Process("worker", ["-m", "agents", "worker"], stack_env, log_dir)
    time.sleep(1.0)
    if process.popen.poll() is not None:
        pytest.fail(f"the agents worker exited:\n{process.tail()}", pytrace=False)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def open_url(gateways: dict[str, str]) -> str:
    return gateways["open"]
