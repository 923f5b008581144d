"""A TCP proxy in front of the S3 server that can hold one upload half-way, to put a fault exactly inside it.

Every request and answer passes through unchanged until one matches `hold(method, path)`: that request's head and
the first half of its body reach the server, the rest never does, and no answer comes back. The uploader waits (or
is killed) inside its PUT; when it lets go of the connection, the proxy closes its side too, and the server sees an
upload that ended short of its Content-Length. Only one request is held; later ones pass.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from urllib.parse import urlparse

HEAD_END = b"\r\n\r\n"


class _Connection:
    def __init__(self, client: socket.socket, server: socket.socket):
        self.client, self.server = client, server
        self.holding = False

    def close(self) -> None:
        for sock in (self.client, self.server):
            _close(sock)


class HoldingProxy:
    def __init__(self, upstream_url: str, hold: Callable[[str, str], bool]):
        parsed = urlparse(upstream_url)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.hold = hold
        self.held = threading.Event()
        self.held_path: str | None = None
        self._connections: list[_Connection] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        for connection in self._connections:
            connection.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            connection = _Connection(client, socket.create_connection(self.upstream))
            self._connections.append(connection)
            threading.Thread(target=self._requests, args=(connection,), daemon=True).start()
            threading.Thread(target=self._answers, args=(connection,), daemon=True).start()

    def _requests(self, connection: _Connection) -> None:
        """Client to server, one request at a time (head, then exactly Content-Length bytes of body)."""
        pending = b""
        try:
            while True:
                head, pending = _read_until(connection.client, pending)
                if head is None:
                    return
                method, path, length, chunked = _parse(head)
                if chunked:  # no body length to count: pass the rest of the connection through untouched
                    connection.server.sendall(head + pending)
                    while data := connection.client.recv(65536):
                        connection.server.sendall(data)
                    return
                body, pending = _read_exactly(connection.client, pending, length)
                if not self.held.is_set() and self.hold(method, path):
                    connection.holding = True
                    connection.server.sendall(head + body[: len(body) // 2])
                    self.held_path = path
                    self.held.set()
                    while connection.client.recv(65536):  # swallow whatever else comes until the client goes
                        pass
                    return
                connection.server.sendall(head + body)
        except OSError:
            return
        finally:
            connection.close()

    def _answers(self, connection: _Connection) -> None:
        """Server to client, except that a held connection gets no answer at all."""
        try:
            while data := connection.server.recv(65536):
                if not connection.holding:
                    connection.client.sendall(data)
        except OSError:
            pass
        finally:
            connection.close()


def _read_until(sock: socket.socket, pending: bytes) -> tuple[bytes | None, bytes]:
    while HEAD_END not in pending:
        data = sock.recv(65536)
        if not data:
            return None, b""
        pending += data
    end = pending.index(HEAD_END) + len(HEAD_END)
    return pending[:end], pending[end:]


def _read_exactly(sock: socket.socket, pending: bytes, length: int) -> tuple[bytes, bytes]:
    while len(pending) < length:
        data = sock.recv(65536)
        if not data:
            raise OSError("the client went away in the middle of a request body")
        pending += data
    return pending[:length], pending[length:]


def _parse(head: bytes) -> tuple[str, str, int, bool]:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    return method, path, int(headers.get("content-length", 0) or 0), chunked


class CuttableProxy:
    """A TCP proxy passing bytes both ways until `cut()`: then every open connection is closed and new ones are
    closed as soon as they arrive, as if the network to the server were gone; `mend()` lets connections through
    again. Put in front of one process's database to cut that process alone off from it."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.cut_off = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="cuttable-accept", daemon=True).start()

    def cut(self) -> None:
        self.cut_off.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)

    def mend(self) -> None:
        self.cut_off.clear()

    def close(self) -> None:
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                _close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.cut_off.is_set():
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(target)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
