"""A job's object store calls wait out an outage with back-off, and give up (StoreDown) past the patience."""

from __future__ import annotations

import time

import pytest

from agents.jobs.child import RUN, JobContext, StoreDown
from infra.objectstore import ObjectStoreUnavailable
from infra.settings import Settings


class Context:
    mode = RUN
    stored = JobContext.stored

    def __init__(self, patience_s: float):
        self.settings = Settings(object_store_patience_s=patience_s)
        self.stop = False

    def should_stop(self) -> bool:
        return self.stop


def flaky(failures: int):
    calls = []

    def call() -> str:
        calls.append(time.monotonic())
        if len(calls) <= failures:
            raise ObjectStoreUnavailable("connection refused")
        return "stored"

    return call, calls


def test_an_outage_is_waited_out_with_back_off_and_said_once():
    call, calls = flaky(2)
    said: list[str] = []
    assert Context(30).stored(call, "the checkpoint of step 50", said.append) == "stored"
    assert len(calls) == 3 and len(said) == 1 and "the checkpoint of step 50 waits" in said[0]
    assert calls[2] - calls[1] > calls[1] - calls[0] >= 0.4  # 0.5 s, then 1 s


def test_past_the_patience_the_job_gives_up_for_now():
    call, calls = flaky(1000)
    started = time.monotonic()
    with pytest.raises(StoreDown, match="reading the dataset: the object store is unavailable"):
        Context(1.0).stored(call, "reading the dataset")
    assert 1.0 <= time.monotonic() - started < 3.0 and len(calls) >= 2


def test_a_stop_while_waiting_ends_the_wait_at_once():
    context = Context(60)
    call, _ = flaky(1000)

    def stopping() -> str:
        context.stop = True
        return call()

    started = time.monotonic()
    with pytest.raises(StoreDown):
        context.stored(stopping, "writing the report")
    assert time.monotonic() - started < 0.5
