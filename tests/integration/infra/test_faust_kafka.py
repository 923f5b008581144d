"""A Faust agent against the real Kafka of `make services`: consume, update a table, produce, commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.infra.faust_roundtrip import assert_round_trip, run_doubling_agent


@pytest.mark.timeout(60)
async def test_a_faust_agent_consumes_and_produces_through_kafka(kafka_bootstrap: str, tmp_path: Path) -> None:
    result = await run_doubling_agent(kafka_bootstrap, tmp_path)
    assert_round_trip(result)
