"""Prometheus metrics of one gateway: requests by route and status, latency, open event streams, events relayed.

Each app has its own registry, so several apps in one process (the tests) do not share counters.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "lfz_gateway_requests", "HTTP requests answered.", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "lfz_gateway_request_seconds", "Time to the response's first byte.", ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.streams = Gauge("lfz_gateway_sse_streams", "Event streams open now.", registry=self.registry)
        self.relayed = Counter("lfz_gateway_events_relayed", "Events sent to SSE clients.", registry=self.registry)
        self.subscribers = Gauge(
            "lfz_gateway_live_subscribers", "Subscribers of the live feed.", registry=self.registry
        )
        self.dropped = Gauge(
            "lfz_gateway_slow_subscribers_dropped", "Subscribers dropped for falling behind.", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_label(scope: Scope) -> str:
    """The route's path template (`/api/v1/jobs/{job_id}`), so ids do not explode the label's values."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return "unmatched"
    return scope.get("root_path", "") + path  # a route inside `Mount("/api/v1")` knows only its own part


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_count(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.latency.labels(scope["method"], route_label(scope)).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            self.metrics.requests.labels(scope["method"], route_label(scope), str(status)).inc()
