"""The process supervisor behind `lfz up`, `lfz demo` and the benchmarks: the system as child processes, stopped
together.

Start order: the embedded broker (only when no Kafka URL is set), the migrations (in this process), the agents
workers, the gateway (unless `gateway=False`); `start()` returns once the gateway's /health answers 200. Each worker
and the gateway run in a session of their own, so a Ctrl-C at the terminal reaches this process alone and the
shutdown keeps its order: every child gets SIGTERM (a worker then hands its running jobs back to the queue: their
training children checkpoint and exit), and whatever is left of a child's process group after `stop_timeout_s` is
killed. Linux's parent-death signal covers the case where this process itself is killed.

A child that exits on its own: with `restart` (`lfz up`), `supervise()` starts it again after a back-off (1 s,
2 s, 4 s, ... 30 s) and says so on the terminal and in the child's log; more than `CRASH_LIMIT` exits within
`CRASH_WINDOW_S` is a crash loop, which stops the stack with the child's name and log (restarting it further would
only hide the cause). Each exit, restart and crash loop is also a fact on the system-events topic (events.system,
`cli.system_events`), for operators who watch the bus rather than a terminal. Without `restart` (the demo, the
benchmarks), `check()` raises `StackError` at the first exit. The embedded broker is never restarted: it keeps
nothing, so a new one would be a different, empty log.
"""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from infra.broker import BrokerStartError, EmbeddedBroker
from infra.db import migrate
from infra.process import own_session_dying_with_parent, port_in_use
from cli.errors import CliError
from cli.system_events import SystemEvents
from events.system import ProcessExited, ProcessRestarted, StackHalted
from infra.settings import Settings

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
CRASH_LIMIT, CRASH_WINDOW_S, MAX_BACKOFF_S = 5, 120.0, 30.0


class StackError(CliError):
    """The stack could not start, or one of its processes stopped on its own."""


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes] = field(repr=False)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    exits: list[float] = field(default_factory=list)  # monotonic times of the exits counted for a crash loop
    restart_at: float | None = None  # when it exited and waits to be started again

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, signum: int) -> None:
        """Signal the child's whole process group: the child and anything it started (training children)."""
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


class Stack:
    """`with Stack(settings, port=8000) as stack: ... stack.url ...`; `start()` and `stop()` for longer control."""

    def __init__(self, settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
                 gateway: bool = True, env: Mapping[str, str] | None = None,
                 say: Callable[[str], None] = lambda _: None, startup_timeout_s: float = 120.0,
                 stop_timeout_s: float = 30.0, restart: bool = False, restart_backoff_s: float = 1.0):
        self.settings = settings
        self.restart = restart
        self.restart_backoff_s = restart_backoff_s
        self.restarts = 0
        self.host, self.port, self.workers, self.gateway = host, port, workers, gateway
        # The children's environment: this process's, unless the caller decides every LFZ_* itself (the benchmarks
        # run on a topic prefix and a data folder of their own, whatever the shell says).
        self.env = None if env is None else dict(env)
        self.say = say
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.data_dir = settings.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.broker: EmbeddedBroker | None = None
        self.children: list[Child] = []
        self.events: SystemEvents | None = None  # with `restart`: where the supervisor's facts go

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        if self.gateway and port_in_use(self.host, self.port):
            raise StackError(f"port {self.port} on {self.host} is in use - is `lfz up` running already? "
                             f"Use it with --url {self.url}, or pick another --port")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            env = self._child_env()
            if self.restart and self.events is None:
                self.events = SystemEvents(self.settings.model_copy(update={"kafka_url": env["LFZ_KAFKA_URL"]}),
                                           self.say)
            self._migrate()
            for index in range(1, self.workers + 1):
                name = f"worker-{index}" if self.workers > 1 else "worker"
                self._spawn(name, ["-m", "agents", "worker"], env)
            if self.gateway:
                self._spawn("gateway", ["-m", "gateway", "--host", self.host, "--port", str(self.port)], env)
                self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self.url

    def _child_env(self) -> dict[str, str]:
        base = os.environ if self.env is None else self.env
        env = {**base, "LFZ_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"}
        if not self.settings.kafka_url:
            self.broker = EmbeddedBroker(self.log_dir)
            try:
                env["LFZ_KAFKA_URL"] = self.broker.start()
            except BrokerStartError as error:
                raise StackError(str(error)) from None
            self.say(f"broker: embedded Tansu at {self.broker.bootstrap}")
        else:
            self.say(f"broker: {self.settings.kafka_url}")
        return env

    def _migrate(self) -> None:
        url = self.settings.model_copy(update={"data_dir": self.data_dir}).resolved_database_url
        try:
            migrate(url, quiet=True)
        except Exception as error:  # a database that is down or refuses us: one line, not alembic's traceback
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise StackError(f"could not migrate the database at {url.split('@')[-1]}: {first}") from None
        self.say(f"database: {url.split('@')[-1]} (migrated)")

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        child = self._launch(name, args, env)
        self.children.append(child)
        return child

    def _launch(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")
        log.write(f"--- lfz: starting {name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        popen = subprocess.Popen([sys.executable, *args], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, preexec_fn=own_session_dying_with_parent)
        return Child(name, popen, log_path, log, list(args), env)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last = "no answer yet"
        with httpx.Client(timeout=3.0) as http:
            while time.monotonic() < deadline:
                self.check()
                try:
                    response = http.get(f"{self.url}/health")
                    if response.status_code == 200:
                        return
                    last = response.json().get("error", {}).get("message", f"HTTP {response.status_code}")
                except (httpx.HTTPError, ValueError) as error:
                    last = type(error).__name__
                time.sleep(0.2)
        raise StackError(f"the gateway did not become healthy within {self.startup_timeout_s:.0f}s ({last}); "
                         f"read {self.log_dir / 'gateway.log'}")

    def check(self) -> None:
        """Raise StackError when a process of the stack has exited (or the embedded broker has)."""
        for child in self.children:
            code = child.popen.poll()
            if code is not None:
                raise StackError(f"the {child.name} exited unexpectedly (exit code {code}); read its log: "
                                 f"{child.log_path}")
        if self.broker is not None and not self.broker.running:
            raise StackError(f"the embedded broker exited unexpectedly; its log: {self.broker.log_path}")

    def supervise(self) -> None:
        """`check()` for a stack that restarts its processes: call it every half second or so."""
        if not self.restart:
            self.check()
            return
        if self.broker is not None and not self.broker.running:
            raise StackError(f"the embedded broker exited unexpectedly; its log: {self.broker.log_path}")
        now = time.monotonic()
        for index, child in enumerate(self.children):
            if child.restart_at is None:
                code = child.popen.poll()
                if code is not None:
                    self._exited(child, code, now)
            elif now >= child.restart_at:
                child.log.close()
                again = self._launch(child.name, child.args, child.env)
                again.exits = child.exits
                self.children[index] = again
                self.restarts += 1
                self.say(f"{child.name}: started again (pid {again.pid})")
                self._announce(ProcessRestarted, process=child.name, pid=again.pid, previous_pid=child.pid)

    def _exited(self, child: Child, code: int, now: float) -> None:
        child.signal_group(signal.SIGKILL)  # what it left behind (a training child whose parent died, for one)
        child.exits = [at for at in child.exits if now - at < CRASH_WINDOW_S] + [now]
        if len(child.exits) > CRASH_LIMIT:
            reason = (f"the {child.name} exited {len(child.exits)} times within {CRASH_WINDOW_S:.0f}s (last exit code "
                      f"{code}): a crash loop, so the stack stops; read its log: {child.log_path}")
            self._announce(ProcessExited, process=child.name, pid=child.pid, exit_code=code,
                           exits_in_window=len(child.exits), restart_in_s=None)
            self._announce(StackHalted, process=child.name, reason=reason)
            raise StackError(reason)
        delay = min(self.restart_backoff_s * 2.0 ** (len(child.exits) - 1), MAX_BACKOFF_S)
        self._announce(ProcessExited, process=child.name, pid=child.pid, exit_code=code,
                       exits_in_window=len(child.exits), restart_in_s=delay)
        message = (f"{child.name} exited unexpectedly (exit code {code}); restarting it in {delay:g}s "
                   f"({len(child.exits)} of at most {CRASH_LIMIT} exits within {CRASH_WINDOW_S:.0f}s)")
        child.log.write(f"--- lfz: {message}\n".encode())
        child.log.flush()
        self.say(message)
        child.restart_at = now + delay

    def _announce(self, cls: type, **fields: object) -> None:
        if self.events is not None:
            self.events.announce(cls, **fields)

    def stop(self) -> None:
        """SIGTERM to every child, a kill for what remains after the timeout, then the broker. Idempotent."""
        running = [c for c in self.children if c.alive()]
        if running:
            self.say("stopping: " + ", ".join(c.name for c in running))
        for child in running:
            try:
                child.popen.send_signal(signal.SIGTERM)  # the process alone: a worker suspends its own children
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.stop_timeout_s
        for child in running:
            try:
                child.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop within {self.stop_timeout_s:.0f}s: killing it")
        for child in self.children:
            child.signal_group(signal.SIGKILL)  # stragglers: a training child of a killed worker, for one
            child.popen.wait()
            child.log.close()
        self.children = []
        if self.events is not None:  # before the broker: what is queued goes out
            self.events.close()
            self.events = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Watchdog:
    """Checks a running stack from a thread. When a process of it dies, it interrupts the main thread (which may be
    blocked reading an event stream that will never end) and keeps the StackError for the caller to raise:

        with Watchdog(stack) as watchdog:
            try: ...
            except KeyboardInterrupt: raise watchdog.failure or ...
    """

    def __init__(self, stack: Stack, interval_s: float = 1.0):
        self.stack = stack
        self.interval_s = interval_s
        self.failure: StackError | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lfz-watchdog", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.interval_s):
            try:
                self.stack.check()
            except StackError as error:
                self.failure = error
                _thread.interrupt_main()
                return

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end the block the way Ctrl-C does (as KeyboardInterrupt), so one path cleans up. SIGINT is
    set too: a shell starts background commands with it ignored, and `kill -INT` must still stop the stack."""
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def shielded() -> Iterator[None]:
    """While stopping: a second Ctrl-C or SIGTERM must not cut the shutdown short and leave processes behind."""
    signums = (signal.SIGINT, *STOP_SIGNALS)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
