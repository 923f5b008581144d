"""`python -m bench followers HOST PORT PATH COUNT`: COUNT followers of a server-sent event stream in one process,
the client side of `bench gateway`'s fan-out.

The clients share the machine with the gateway they measure, so they are made as cheap as a client can honestly be:
each is a bare asyncio protocol on its own connection, with no HTTP library: it checks the status line, then looks
only for `id:` lines (splitting what arrives on newlines; the chunked encoding's size lines never start with `id:`),
and notes the event id with the time it arrived. That time is `time.monotonic()`, Linux's CLOCK_MONOTONIC, one clock
for every process of the machine, so the benchmark compares it with its own publish times.

It talks to its parent one line at a time:

    stdout: `ready <connected> <failed>`, once every connection has its response headers or has failed
    stdin:  any line, or end of file: stop
    stdout: one JSON object, {"arrivals": {"<event id>": [time, ...]}, "errors": {"<error>": count}}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter


class Follower(asyncio.Protocol):
    """One connection: the request, the status line, then `id:` lines timed as they arrive."""

    def __init__(self, request: bytes, arrivals: list[tuple[bytes, float]]):
        self.request = request
        self.arrivals = arrivals
        self.headers: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._pending = b""  # an incomplete line, or the headers while they are incomplete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.headers.done():
            self._pending += data
            end = self._pending.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self._pending.split(b"\r\n", 1)[0]
            data, self._pending = self._pending[end + 4:], b""
            if status.split(b" ")[1:2] != [b"200"]:
                self.headers.set_exception(ConnectionError(status.decode(errors="replace")))
                self.transport.close()  # type: ignore[union-attr]
                return
            self.headers.set_result(None)
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if line.startswith(b"id: "):
                self.arrivals.append((line[4:], now))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.headers.done():
            self.headers.set_exception(exc or ConnectionError("closed before the response headers"))


async def follow(host: str, port: int, path: str, count: int, parallel_connects: int = 50) -> dict:
    loop = asyncio.get_running_loop()
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
               "Cache-Control: no-store\r\n\r\n").encode()
    arrivals: list[tuple[bytes, float]] = []
    errors: Counter[str] = Counter()
    followers: list[Follower] = []
    gate = asyncio.Semaphore(parallel_connects)  # a burst of a thousand SYNs would overflow the listen backlog

    async def connect() -> None:
        async with gate:
            try:
                _, follower = await loop.create_connection(lambda: Follower(request, arrivals), host, port)
                await asyncio.wait_for(follower.headers, 60)
                followers.append(follower)
            except (OSError, TimeoutError) as error:
                errors[f"{type(error).__name__}: {error}"] += 1

    await asyncio.gather(*(connect() for _ in range(count)))
    print(f"ready {len(followers)} {count - len(followers)}", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for follower in followers:
        if follower.transport is not None:
            follower.transport.close()
    by_id: dict[str, list[float]] = {}
    for event_id, arrived in arrivals:
        by_id.setdefault(event_id.decode(errors="replace").strip(), []).append(arrived)
    return {"arrivals": by_id, "errors": dict(errors)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench followers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("path", help="e.g. /api/v1/events")
    parser.add_argument("count", type=int, help="connections to open")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"count must be at least 1, got {args.count}")
    if not args.path.startswith("/"):
        parser.error(f"path must start with '/', got {args.path!r}")
    print(json.dumps(asyncio.run(follow(args.host, args.port, args.path, args.count))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
