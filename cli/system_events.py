"""The supervisor's voice on Kafka: `lfz up` publishes each exit and restart of a process it supervises (and a crash
loop that stops the stack) on the system-events topic, beside saying it on the terminal and in the process's log.

Supervision must never wait on the broker, and a Kafka producer needs an event loop: the facts go through a queue to
a thread of their own that runs one producer. A broker that cannot be reached costs a line on the terminal, never
the supervision; what is still queued when the stack stops gets a few seconds to go out.
"""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

from events import Topics
from events.system import ProcessEvent
from infra.kafka import create_producer
from infra.settings import Settings

SEND_TIMEOUT_S = 10.0


class SystemEvents:
    """`announce(ProcessExited, process="worker-1", ...)` from the supervising thread; `close()` at the end."""

    def __init__(self, settings: Settings, say: Callable[[str], None]):
        self.settings = settings
        self.topic = Topics(settings.topic_prefix).system_events
        self.say = say
        self.host = socket.gethostname()
        self._queue: queue.Queue[ProcessEvent | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="lfz-system-events", daemon=True)
        self._thread.start()

    def announce(self, cls: type[ProcessEvent], **fields: Any) -> ProcessEvent:
        event = cls(host=self.host, supervisor_pid=os.getpid(), **fields)
        self._queue.put(event)
        return event

    def close(self, timeout_s: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        asyncio.run(self._publish())

    async def _publish(self) -> None:
        producer = None
        warned = False
        while (event := await asyncio.to_thread(self._queue.get)) is not None:
            try:
                if producer is None:
                    producer = create_producer(self.settings, client_id="lfz-supervisor")
                    await asyncio.wait_for(producer.start(), SEND_TIMEOUT_S)
                await asyncio.wait_for(
                    producer.send_and_wait(self.topic, event.to_json(), key=event.process.encode()), SEND_TIMEOUT_S)
            except Exception as error:  # the broker is down or refuses us: say it once, keep supervising
                if not warned:
                    self.say(f"could not publish {type(event).__name__} on {self.topic}: {type(error).__name__}: "
                             f"{error} (the supervisor goes on; its terminal and the process logs say the same)")
                    warned = True
                if producer is not None:
                    await _stop(producer)
                    producer = None
        if producer is not None:
            await _stop(producer)


async def _stop(producer: Any) -> None:
    try:
        await asyncio.wait_for(producer.stop(), SEND_TIMEOUT_S)
    except Exception:
        pass
