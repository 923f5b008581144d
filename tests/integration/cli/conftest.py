"""The `lfz` CLI end to end: as a process on the embedded defaults (`lfz up`, `lfz demo`), and in-process against
an agents worker and a gateway (with an API key) on the real servers of `make services`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cli.main import main
from infra.db import migrate
from infra.process import free_port
from infra.settings import Settings
from tests.integration.stack import start_gateway, start_worker, wait_until

API_KEY = "cli-test-key-0123456789"
SERVER_URLS = ("LFZ_KAFKA_URL", "LFZ_DATABASE_URL", "LFZ_OBJECT_STORE_URL")


def embedded_env(data_dir: Path) -> dict[str, str]:
    """The environment of a fresh machine: no server URLs (so the embedded defaults), state under `data_dir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LFZ_")}
    env.update(LFZ_DATA_DIR=str(data_dir), LFZ_PROGRESS_EVERY_STEPS="5", LFZ_PROGRESS_EVERY_S="0.5",
               LFZ_LOG_LEVEL="INFO")
    assert not any(name in env for name in SERVER_URLS)
    return env


def corpus(repeat: int = 80) -> str:
    """A small English text made here: enough for the tiny preset."""
    lines = [
        "The model reads the text one character at a time and learns what comes next.",
        "A small network trained for a few steps already knows which letters follow a space.",
        "Validation text is held out, so the loss on it is an honest measure.",
    ]
    return "\n".join(lines[i % len(lines)] for i in range(repeat)) + "\n"


@pytest.fixture(scope="module")
def cli_env(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    migrate(settings.resolved_database_url, quiet=True)
    env = {k: v for k, v in os.environ.items() if k != "LFZ_API_KEYS"}
    env.update(LFZ_TOPIC_PREFIX=f"lfz.test.cli{uuid.uuid4().hex[:10]}.", LFZ_DATA_DIR=str(tmp_path_factory.mktemp("lfz")),
               LFZ_PROGRESS_EVERY_STEPS="5", LFZ_PROGRESS_EVERY_S="0.5", LFZ_LEASE_S="6", LFZ_LOG_LEVEL="INFO")
    return env


@pytest.fixture(scope="module")
def gateway_url(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An agents worker and a gateway that wants API_KEY, on this module's own topics."""
    log_dir = tmp_path_factory.mktemp("cli-logs")
    worker = start_worker("cli-worker", cli_env, log_dir)
    try:
        gateway, url = start_gateway("cli-gateway", {**cli_env, "LFZ_API_KEYS": API_KEY}, log_dir)
    except BaseException:
        worker.stop()
        raise
    try:
        yield url
    finally:
        gateway.stop()
        worker.stop()
        if not worker.alive() and worker.popen.returncode not in (0, -15):
            print(worker.tail())


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_lfz(args: list[str], **env: str) -> Result:
    """`lfz ARGS...` in this process, with its stdout and stderr captured and `env` set for the call."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(stdout), redirect_stderr(stderr):
        for name, value in env.items():
            patch.setenv(name, value)
        code = main(args)
    return Result(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="module")
def lfz_up_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`lfz up` on the embedded defaults, one for the test module that asks for it."""
    running = Up(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]))
    try:
        wait_until(running.ready, 120, "lfz up to say it is up")
        yield running
    finally:
        running.close()


@pytest.fixture
def lfz_on_up(lfz_up_stack: Up, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run `lfz ARGS...` against the module's `lfz up`, without an API key."""
    monkeypatch.setenv("LFZ_URL", lfz_up_stack.url)
    monkeypatch.delenv("LFZ_API_KEY", raising=False)
    return lambda *args: run_lfz(list(args))


@pytest.fixture
def lfz(gateway_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run `lfz ARGS...` against the module's gateway, with the right API key unless a test changes it."""
    monkeypatch.setenv("LFZ_URL", gateway_url)
    monkeypatch.setenv("LFZ_API_KEY", API_KEY)
    return lambda *args: run_lfz(list(args))


class Up:
    """`lfz up` as a person starts it (a process, on the embedded defaults unless `env` says otherwise)."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "lfz-up.log"
        self.data_dir = tmp_path / "data"
        self.log = open(self.log_path, "wb")
        self.popen = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--port", str(self.port), *args],
                                      env=env or embedded_env(self.data_dir), stdout=self.log,
                                      stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        """It said it is up, and the gateway agrees."""
        assert self.popen.poll() is None, f"lfz up exited early:\n{self.output()}"
        if f"lfz is up at {self.url}" not in self.output():
            return False
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self.log.close()
