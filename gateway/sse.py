"""Server-sent events: the wire format (`ServerSentEvent.encode`) and the streaming response that carries it.

The response sends the stream, a keep-alive comment every few seconds, and listens for the client going away; the
first of these to end cancels the others, so an abandoned stream releases its subscription and session at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

SSE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # nginx: pass each event through instead of buffering the response
    "Connection": "keep-alive",
}


def _one_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


@dataclass(frozen=True)
class ServerSentEvent:
    data: str | dict[str, Any] | list[Any] | None = None
    event: str | None = None
    id: str | int | None = None
    retry_ms: int | None = None
    comment: str | None = None

    def encode(self) -> bytes:
        lines: list[str] = []
        if self.comment is not None:
            lines += [f": {line}" for line in self.comment.splitlines() or [""]]
        if self.id is not None:
            lines.append(f"id: {_one_line(str(self.id))}")
        if self.event is not None:
            lines.append(f"event: {_one_line(self.event)}")
        if self.retry_ms is not None:
            lines.append(f"retry: {int(self.retry_ms)}")
        if self.data is not None:
            text = self.data if isinstance(self.data, str) else json.dumps(self.data, separators=(",", ":"))
            # A newline inside the data would end the field: each line becomes its own `data:` line.
            lines += [f"data: {line}" for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
        return ("\n".join(lines) + "\n\n").encode()


KEEP_ALIVE = b": keep-alive\n\n"


class EventStreamResponse:
    """An ASGI response streaming `ServerSentEvent`s (or pre-encoded bytes) from an async iterable."""

    media_type = "text/event-stream"

    def __init__(
        self,
        source: AsyncIterable[ServerSentEvent | bytes],
        *,
        keepalive_s: float = 15.0,
        on_close: Callable[[], None] | None = None,
        headers: dict[str, str] | None = None,
        status_code: int = 200,
    ):
        self.source = source
        self.keepalive_s = keepalive_s
        self.on_close = on_close
        self.status_code = status_code
        self.headers = {**SSE_HEADERS, **(headers or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream(receive, send)
        finally:
            if self.on_close is not None:
                self.on_close()

    async def _stream(self, receive: Receive, send: Send) -> None:
        raw_headers = [(b"content-type", f"{self.media_type}; charset=utf-8".encode())]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status_code, "headers": raw_headers})
        # An uncontended lock is taken without a trip through the event loop: with a thousand streams, that trip per
        # event was a large part of the gateway's time per delivery.
        lock = anyio.Lock(fast_acquire=True)

        async def emit(chunk: bytes) -> None:
            async with lock:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async with anyio.create_task_group() as group:

            async def relay() -> None:
                iterator = aiter(self.source)
                try:
                    async for item in iterator:
                        await emit(item if isinstance(item, bytes) else item.encode())
                finally:
                    group.cancel_scope.cancel()
                    close = getattr(iterator, "aclose", None)
                    if close is not None:  # run the source's `finally` now: it holds a subscription and a session
                        with anyio.CancelScope(shield=True):
                            await close()

            async def keep_alive() -> None:
                while True:
                    await anyio.sleep(self.keepalive_s)
                    await emit(KEEP_ALIVE)

            async def watch_disconnect() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        group.cancel_scope.cancel()
                        return

            group.start_soon(relay)
            group.start_soon(keep_alive)
            group.start_soon(watch_disconnect)
        try:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client is already gone
            pass
