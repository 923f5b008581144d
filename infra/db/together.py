"""Reads that requests arriving together share: a burst of a hundred generations costs a few statements, not a
hundred sessions of two or three each.

One read runs at a time. A request that arrives while it runs waits for the next one, which answers every request
then waiting in one call (one statement per kind of question, not per request). A request never takes the answer of
a read that began before it arrived, so it sees every write that was made before it came, as a read of its own would
(an alias moved a moment before still moves the request). A lone request waits for nothing: its read starts at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadTogether(Generic[K, V]):
    """`read(key)` through `read_many(keys)`, which answers each distinct key of the requests waiting together. An
    answer that is an exception is raised to the requests that asked that key; an exception of `read_many` itself
    (the database is down) to all of them."""

    def __init__(self, read_many: Callable[[list[K]], Awaitable[dict[K, V | BaseException]]]):
        self._read_many = read_many
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._running: asyncio.Task[None] | None = None
        self.reads = 0  # calls of read_many: what a test or a benchmark counts

    async def read(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._running is None:
            self._running = asyncio.create_task(self._serve())
        return await future

    async def _serve(self) -> None:
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, {}
                self.reads += 1
                try:
                    answers = await self._read_many(list(waiting))
                except BaseException as error:  # every waiter learns it, cancellation included
                    for futures in waiting.values():
                        _settle(futures, error)
                    if isinstance(error, asyncio.CancelledError):
                        raise
                    continue
                for key, futures in waiting.items():
                    _settle(futures, answers.get(key, KeyError(key)))
        finally:
            self._running = None
            for futures in self._waiting.values():  # cancelled with requests still waiting: they are not left hanging
                _settle(futures, asyncio.CancelledError())
            self._waiting = {}


def _settle(futures: list[asyncio.Future[V]], answer: V | BaseException) -> None:
    for future in futures:
        if future.done():  # its request was cancelled meanwhile
            continue
        if isinstance(answer, asyncio.CancelledError):
            future.cancel()
        elif isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)
