"""Reads shared by the requests that arrive together (infra/db/together.py), over an in-memory table."""

from __future__ import annotations

import asyncio

import pytest

from infra.db.together import ReadTogether


class Table:
    """A table read by `read_many`, which can be held open to let requests pile up behind it."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.calls: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def read_many(self, keys: list[str]) -> dict[str, int | BaseException]:
        self.calls.append(keys)
        snapshot = dict(self.rows)  # what the statement sees: the rows as they are when it starts
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return {key: snapshot[key] if key in snapshot else LookupError(f"no row {key}") for key in keys}


async def test_a_lone_request_reads_at_once_and_gets_its_own_answer() -> None:
    table = Table()
    table.rows = {"a": 1, "b": 2}
    reads = ReadTogether(table.read_many)
    assert await reads.read("b") == 2
    assert table.calls == [["b"]]


async def test_requests_that_arrive_during_a_read_share_the_next_one() -> None:
    table = Table()
    table.rows = {"model": 7, **{f"id{i}": i for i in range(50)}}
    table.gate = asyncio.Event()
    reads = ReadTogether(table.read_many)
    first = asyncio.create_task(reads.read("model"))
    await table.started.wait()
    burst = [asyncio.create_task(reads.read(key)) for key in ["model"] * 30 + [f"id{i}" for i in range(50)]]
    await asyncio.sleep(0)
    table.gate.set()
    answers = await asyncio.gather(first, *burst)
    assert answers == [7] + [7] * 30 + list(range(50))
    assert len(table.calls) == 2  # 81 requests, two reads
    assert table.calls[1].count("model") == 1 and len(table.calls[1]) == 51  # each distinct key asked once


async def test_a_request_never_takes_the_answer_of_a_read_that_began_before_it() -> None:
    table = Table()
    table.rows = {"alias": 1}
    table.gate = asyncio.Event()
    reads = ReadTogether(table.read_many)
    before = asyncio.create_task(reads.read("alias"))
    await table.started.wait()
    table.rows["alias"] = 2  # the alias moves while that read runs; a request sent after the move arrives
    after = asyncio.create_task(reads.read("alias"))
    await asyncio.sleep(0)
    table.gate.set()
    assert await before == 1
    assert await after == 2


async def test_an_answer_that_is_an_error_goes_only_to_the_requests_that_asked_it() -> None:
    table = Table()
    table.rows = {"a": 1}
    reads = ReadTogether(table.read_many)
    found, missing = await asyncio.gather(reads.read("a"), reads.read("nope"), return_exceptions=True)
    assert found == 1
    assert isinstance(missing, LookupError) and "no row nope" in str(missing)


async def test_a_failed_read_fails_every_request_waiting_on_it_and_the_next_read_runs() -> None:
    calls = 0

    async def down_once(keys: list[str]) -> dict[str, int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the database is down")
        return dict.fromkeys(keys, 5)

    reads = ReadTogether(down_once)
    results = await asyncio.gather(reads.read("a"), reads.read("b"), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert await reads.read("a") == 5  # tried again, as a handler waiting out an outage does


async def test_a_cancelled_request_leaves_the_others_their_answers() -> None:
    table = Table()
    table.rows = {"a": 1, "b": 2}
    table.gate = asyncio.Event()
    reads = ReadTogether(table.read_many)
    first = asyncio.create_task(reads.read("a"))
    await table.started.wait()
    leaving, staying = asyncio.create_task(reads.read("b")), asyncio.create_task(reads.read("b"))
    await asyncio.sleep(0)
    leaving.cancel()
    table.gate.set()
    assert await first == 1
    assert await staying == 2
    with pytest.raises(asyncio.CancelledError):
        await leaving
