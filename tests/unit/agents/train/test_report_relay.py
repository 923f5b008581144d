"""The relay that carries a multi-process run's facts from its rank 0 to the job's child: a rank killed in the middle
of a message leaves the relay working for the next generation's rank 0."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time

from agents.train.ranks import RankReports, ReportRelay


def _report(address: str, authkey: bytes, values: list) -> None:
    reports = RankReports(address, authkey)
    for value in values:
        reports.put(value)


def _report_forever(address: str, authkey: bytes) -> None:
    reports = RankReports(address, authkey)
    reports.put("before")
    while True:
        reports.put(b"x" * (64 << 20))  # long enough to be killed in the middle of one


def test_a_rank_killed_mid_message_leaves_the_relay_to_the_next_one():
    spawn = multiprocessing.get_context("spawn")
    received: queue.Queue = queue.Queue()
    relay = ReportRelay(received)
    try:
        first = spawn.Process(target=_report_forever, args=(relay.address, relay.authkey))
        first.start()
        assert received.get(timeout=30) == "before"
        time.sleep(0.5)
        os.kill(first.pid, signal.SIGKILL)
        first.join(10)
        second = spawn.Process(target=_report, args=(relay.address, relay.authkey, ["step 1", "step 2", "done"]))
        second.start()
        second.join(30)
        assert second.exitcode == 0
    finally:
        relay.close()
    seen = []
    while not received.empty():
        seen.append(received.get_nowait())
    assert [v for v in seen if isinstance(v, str)] == ["step 1", "step 2", "done"]
    assert all(v == b"x" * (64 << 20) for v in seen if not isinstance(v, str))  # whole messages only


def test_a_connection_without_the_key_is_refused_and_the_relay_goes_on():
    from multiprocessing.connection import AuthenticationError, Client

    received: queue.Queue = queue.Queue()
    relay = ReportRelay(received)
    try:
        try:
            Client(relay.address, family="AF_UNIX", authkey=b"wrong").send("forged")
        except (AuthenticationError, EOFError, OSError):
            pass
        _report(relay.address, relay.authkey, ["real"])
    finally:
        relay.close()
    assert received.get(timeout=5) == "real" and received.empty()
