"""A scripted gateway for the CLI's unit tests: routes answered in-process through httpx's MockTransport, and every
request kept, so a test can check what a command sent and how it shows what came back."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cli.client import Client
from cli import connection

Handler = Callable[[httpx.Request], httpx.Response]


def error(status: int, code: str, message: str, field: str | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, "field": field}})


def sse(events: list[dict[str, Any]]) -> httpx.Response:
    body = "".join(f"id: {e['seq']}\nevent: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)


class FakeGateway:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, answer: Handler | dict | list | httpx.Response) -> None:
        if isinstance(answer, httpx.Response):
            self.routes[(method, path)] = lambda _request, response=answer: response
        elif callable(answer):
            self.routes[(method, path)] = answer
        else:
            self.routes[(method, path)] = lambda _request, body=answer: httpx.Response(200, json=body)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return error(404, "not_found", f"no route {request.method} {request.url.path}")
        return route(request)

    def sent(self, method: str, path: str) -> httpx.Request:
        return next(r for r in self.requests if r.method == method and r.url.path == path)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    """Every `gateway(url)` of the CLI talks to this fake instead of the network."""
    gateway = FakeGateway()
    transport = httpx.MockTransport(gateway.handle)

    def client(url: str, api_key: str | None = None, timeout: float = 60.0) -> Client:
        return Client(url, api_key=api_key, timeout=timeout, transport=transport)

    monkeypatch.setattr(connection, "Client", client)
    monkeypatch.delenv("LFZ_API_KEY", raising=False)
    monkeypatch.delenv("LFZ_URL", raising=False)
    return gateway


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
