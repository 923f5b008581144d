"""How often the generate agent publishes a request's tokens, by how busy its engine is."""

import pytest

from agents.generate.agent import FLUSH_MAX_S, FLUSH_S, flush_interval


@pytest.mark.parametrize(("sequences", "interval"), [(0, FLUSH_S), (1, FLUSH_S), (8, FLUSH_S), (16, 2 * FLUSH_S),
                                                     (32, 4 * FLUSH_S), (64, FLUSH_MAX_S), (4096, FLUSH_MAX_S)])
def test_a_busy_engine_publishes_each_request_less_often_up_to_a_limit(sequences: int, interval: float) -> None:
    assert flush_interval(sequences) == pytest.approx(interval)


def test_the_facts_a_second_stay_about_the_same_from_eight_sequences_to_forty():
    facts_per_s = [n / flush_interval(n) for n in (8, 16, 24, 40)]  # one fact per request per interval
    assert max(facts_per_s) == pytest.approx(min(facts_per_s))
