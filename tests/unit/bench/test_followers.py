"""The fan-out benchmark's followers: what they count from a chunked event stream, whatever the reads cut."""

from __future__ import annotations

import asyncio

import pytest

from bench.followers import Follower

HEADERS = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
           b"transfer-encoding: chunked\r\n\r\n")


def _chunk(event: bytes) -> bytes:
    return f"{len(event):x}\r\n".encode() + event + b"\r\n"


class _Transport:
    def __init__(self) -> None:
        self.written, self.closed = b"", False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


async def test_every_id_line_is_counted_once_however_the_reads_split_it():
    arrivals: list[tuple[bytes, float]] = []
    follower = Follower(b"GET /api/v1/events HTTP/1.1\r\n\r\n", arrivals)
    transport = _Transport()
    follower.connection_made(transport)  # type: ignore[arg-type]
    assert transport.written.startswith(b"GET /api/v1/events")
    stream = HEADERS + b"".join(_chunk(f"id: job:{seq}\nevent: TrainProgress\ndata: {{\"seq\": {seq}}}\n\n".encode())
                                for seq in range(1, 6)) + _chunk(b": keep-alive\n\n")
    for cut in range(0, len(stream), 7):  # reads of 7 bytes cut the headers, the chunk sizes and the id lines
        follower.data_received(stream[cut:cut + 7])
    await follower.headers
    assert [event_id for event_id, _ in arrivals] == [f"job:{seq}".encode() for seq in range(1, 6)]
    assert all(later >= earlier for (_, earlier), (_, later) in zip(arrivals, arrivals[1:]))


async def test_a_refused_stream_fails_its_follower_and_closes_the_connection():
    follower = Follower(b"GET / HTTP/1.1\r\n\r\n", [])
    transport = _Transport()
    follower.connection_made(transport)  # type: ignore[arg-type]
    follower.data_received(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n")
    with pytest.raises(ConnectionError, match="429"):
        await follower.headers
    assert transport.closed


async def test_a_connection_lost_before_the_headers_fails_its_follower():
    follower = Follower(b"GET / HTTP/1.1\r\n\r\n", [])
    follower.connection_made(_Transport())  # type: ignore[arg-type]
    follower.connection_lost(None)
    with pytest.raises(ConnectionError, match="before the response headers"):
        await asyncio.wait_for(follower.headers, 1)
