"""The agents' Kafka transport: Faust's aiokafka driver, with the consumer's fetch wait a setting.

Faust fixes its consumer's `fetch_max_wait_ms` at 1500 ms. Kafka answers a fetch as soon as data arrives, so there
the wait costs nothing; the embedded broker (Tansu) answers only when the wait is over, so every command waited
for it: a five-token generation took 750 ms on the embedded defaults against 45 ms on Kafka. A short wait makes
both answer within milliseconds; an idle consumer then asks a few more times a second, which costs nothing that
shows on loopback.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads it when the consumer starts (it builds its fetcher then); Faust gives no other way in.
        consumer._fetch_max_wait_ms = self.app.conf.lfz_fetch_wait_ms  # type: ignore[attr-defined]
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """faust.App on that transport; `fetch_wait_ms` is how long a fetch may wait for new records."""

    def __init__(self, *args: Any, fetch_wait_ms: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.conf.lfz_fetch_wait_ms = fetch_wait_ms  # type: ignore[attr-defined]

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
