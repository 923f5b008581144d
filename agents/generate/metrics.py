"""The generate agent's Prometheus metrics, read from the engines when scraped: sequences in each decoding step,
requests waiting for a slot, tokens made. Served on LFZ_WORKER_METRICS_PORT (off when 0: several workers on one
machine would want several ports)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agents.generate.serving import ModelCache


class EngineCollector:
    def __init__(self, cache: ModelCache):
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily("lfz_generate_active_sequences", "Sequences in the engine's decoding steps.",
                                   labels=["checkpoint"])
        waiting = GaugeMetricFamily("lfz_generate_waiting_requests", "Requests waiting for a free slot.",
                                    labels=["checkpoint"])
        tokens = CounterMetricFamily("lfz_generate_tokens", "Tokens generated since the model was loaded.",
                                     labels=["checkpoint"])
        for key, served in self.cache.loaded():
            engine = served.engine
            active.add_metric([key], len(engine.active))
            waiting.add_metric([key], len(engine.waiting))
            tokens.add_metric([key], engine.tokens_made)
        yield from (active, waiting, tokens)


def registry_of(cache: ModelCache) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(cache))
    return registry


def serve_metrics(cache: ModelCache, port: int, host: str = "127.0.0.1") -> None:
    start_http_server(port, addr=host, registry=registry_of(cache))
