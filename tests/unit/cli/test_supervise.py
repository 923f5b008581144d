"""`lfz up`'s supervision, on stand-in children (tiny Python processes): restarts with back-off, and a crash loop
that stops the stack naming the child and its log."""

from __future__ import annotations

import time

import pytest

from cli.stack import CRASH_LIMIT, Stack, StackError
from events.system import ProcessEvent, ProcessExited, ProcessRestarted, StackHalted
from infra.settings import Settings


def stack(tmp_path, **options) -> Stack:
    settings = Settings(data_dir=tmp_path, kafka_url="kafka://127.0.0.1:1")  # no broker is started for these
    built = Stack(settings, gateway=False, workers=0, say=said.append, **options)
    built.log_dir.mkdir(parents=True, exist_ok=True)
    return built


said: list[str] = []


class Announced:
    """In place of the Kafka publisher of `cli.system_events`: the facts the supervisor made, in order."""

    def __init__(self):
        self.events: list[ProcessEvent] = []

    def announce(self, cls: type[ProcessEvent], **fields) -> ProcessEvent:
        event = cls(host="test", supervisor_pid=1, **fields)
        self.events.append(event)
        return event

    def close(self) -> None:
        pass


def supervise_until(built: Stack, condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, said[-5:]
        built.supervise()
        time.sleep(0.02)


def test_a_child_that_dies_is_started_again_after_a_back_off(tmp_path):
    said.clear()
    built = stack(tmp_path, restart=True, restart_backoff_s=0.3)
    built.events = announced = Announced()
    try:
        first = built._spawn("worker-1", ["-c", "import time; time.sleep(60)"], {})
        first.popen.kill()
        first.popen.wait()
        died = time.monotonic()
        supervise_until(built, lambda: built.restarts == 1)
        waited = time.monotonic() - died
        again = built.children[0]
        assert again.pid != first.pid and again.alive() and again.name == "worker-1"
        assert 0.3 <= waited < 5, waited
        assert any("worker-1 exited unexpectedly (exit code -9); restarting it in 0.3s" in line for line in said)
        log = (built.log_dir / "worker-1.log").read_text()
        assert log.count("--- lfz: starting worker-1") == 2 and "exited unexpectedly (exit code -9)" in log
        exited, restarted = announced.events
        assert isinstance(exited, ProcessExited) and (exited.process, exited.pid, exited.exit_code) == \
            ("worker-1", first.pid, -9)
        assert exited.restart_in_s == 0.3 and exited.exits_in_window == 1
        assert isinstance(restarted, ProcessRestarted) and (restarted.pid, restarted.previous_pid) == \
            (again.pid, first.pid)
    finally:
        built.stop()


def test_a_crash_loop_stops_the_stack_naming_the_child_and_its_log(tmp_path):
    said.clear()
    built = stack(tmp_path, restart=True, restart_backoff_s=0.01)
    built.events = announced = Announced()
    try:
        built._spawn("gateway", ["-c", "import sys; sys.exit(3)"], {})
        with pytest.raises(StackError) as error:
            supervise_until(built, lambda: False)
        assert built.restarts == CRASH_LIMIT
        message = str(error.value)
        assert f"the gateway exited {CRASH_LIMIT + 1} times within 120s (last exit code 3)" in message
        assert "crash loop" in message and str(built.log_dir / "gateway.log") in message
        kinds = [type(event) for event in announced.events]
        assert kinds == [ProcessExited, ProcessRestarted] * CRASH_LIMIT + [ProcessExited, StackHalted]
        assert announced.events[-2].restart_in_s is None and announced.events[-1].reason == message
    finally:
        built.stop()


def test_without_restart_the_first_exit_stops_the_stack(tmp_path):
    built = stack(tmp_path)
    try:
        built._spawn("worker", ["-c", "import sys; sys.exit(2)"], {})
        with pytest.raises(StackError, match="the worker exited unexpectedly \\(exit code 2\\)"):
            supervise_until(built, lambda: False)
    finally:
        built.stop()

