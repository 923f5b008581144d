"""The fan-out benchmark against the real Kafka and PostgreSQL: every follower counts every event it was sent.

Latencies are not checked (a benchmark's figures are not a test's business); what is checked is that the figures
describe what happened: how many followers connected, in how many processes, and that no event went uncounted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from infra.settings import Settings


def test_every_follower_of_every_round_receives_every_event(settings: Settings):
    run = subprocess.run([sys.executable, "-m", "bench.gateway", "--clients", "3,7", "--events", "5", "--rate", "50",
                          "--followers-per-process", "4", "--target-ms", "60000", "--skip-generation", "--json"],
                         env=dict(os.environ), capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    fanout = json.loads(run.stdout)["fanout"]
    assert [r["clients"] for r in fanout["rounds"]] == [3, 7]
    for round_ in fanout["rounds"]:
        assert round_["connected"] == round_["clients"] and round_["failed_connections"] == 0
        assert round_["delivered"] == round_["expected"] == round_["clients"] * 5
        assert round_["follower_processes"] == (1 if round_["clients"] <= 4 else 2)
        assert round_["gateway_rss_mb"] > 0 and round_["p99_ms"] <= round_["max_ms"]
        assert round_["ok"] is True
    assert fanout["max_clients_within_target"] == 7
    assert fanout["servers"]["kafka"] == settings.kafka_url
