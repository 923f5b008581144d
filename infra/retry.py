"""Waiting out a server that is down: the one back-off loop of every caller that must not give up on its work.

    await while_down(lambda: apply(batch), DATABASE_DOWN, what="42 facts")

tries the call, and while it fails with one of `down` (`UNAVAILABLE`: any of the servers) waits 0.2 s, 0.4 s, ...
up to `max_delay_s` and tries again, logging each wait. Any other error is the caller's. `give_up` (checked after
each failure) lets a caller that is stopping stop waiting: the error is raised then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from infra.db import DATABASE_DOWN
from infra.kafka import KafkaUnavailable
from infra.objectstore import ObjectStoreUnavailable

T = TypeVar("T")
# What each client raises when its server is down: the database's driver errors (infra.db names them), Kafka and the
# object store their own.
UNAVAILABLE: tuple[type[BaseException], ...] = (*DATABASE_DOWN, KafkaUnavailable, ObjectStoreUnavailable)
log = logging.getLogger(__name__)


def first_line(error: BaseException) -> str:
    """An exception in one line: its first line, or its type when it says nothing."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


async def while_down(call: Callable[[], Awaitable[T]], down: tuple[type[BaseException], ...], *, what: str,
                     first_delay_s: float = 0.2, max_delay_s: float = 5.0,
                     give_up: Callable[[], bool] | None = None, logger: logging.Logger = log) -> T:
    """`call()`'s result, once it succeeds; see the module's docstring."""
    delay = first_delay_s
    while True:
        try:
            return await call()
        except down as error:
            if give_up is not None and give_up():
                raise
            logger.warning("%s waits for a server that is down (retrying in %.1fs): %s", what, delay,
                           first_line(error))
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
