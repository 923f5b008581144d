"""A sweep's trials are drawn from its space as asked (grid, uniform, log-uniform, integers, lists), the same for the
same seed, and checked as training requests; the early-stopping rules stop exactly the trials worse than their
peers at the same step, never before the grace period."""

import math

import pytest

from agents.sweeps.stopping import best_until, rungs, to_stop
from events import DatasetRef, Rejected, SweepRequested
from events.sweeps import EarlyStopping
from infra.search_space import draw, merged, trials


def sweep(**fields):
    return SweepRequested(job_id="s1", model_name="m", dataset=DatasetRef(text="abc"),
                          hyperparameters={"preset": "tiny", "LEARNING_RATE": 0.01}, **fields)


def test_a_grid_is_every_combination_and_takes_no_ranges():
    grid = draw(sweep(method="grid", space={"n_layer": {"values": [1, 2]}, "dropout": {"values": [0.0, 0.1, 0.2]}}))
    assert len(grid) == 6 and {(t["n_layer"], t["dropout"]) for t in grid} == {
        (a, b) for a in (1, 2) for b in (0.0, 0.1, 0.2)}
    with pytest.raises(Rejected) as refused:
        draw(sweep(method="grid", space={"learning_rate": {"min": 1e-4, "max": 1e-2}}))
    assert refused.value.field == "space.learning_rate"


def test_random_draws_follow_the_space_and_the_seed():
    space = {"learning_rate": {"min": 1e-5, "max": 1e-1, "scale": "log"}, "n_layer": {"min": 1, "max": 4,
                                                                                      "integer": True},
             "dropout": {"values": [0.0, 0.2]}}
    assert draw(sweep(space=space, trials=100, seed=7)) == draw(sweep(space=space, trials=100, seed=7))
    assert draw(sweep(space=space, trials=100, seed=7)) != draw(sweep(space=space, trials=100, seed=8))
    drawn = [trial for seed in range(4) for trial in draw(sweep(space=space, trials=100, seed=seed))]
    rates = [math.log10(t["learning_rate"]) for t in drawn]
    assert all(-5 <= r <= -1 for r in rates)
    # log-uniform: each decade holds about a quarter of the draws (uniform would put almost all in the last)
    per_decade = [sum(-5 + d <= r < -4 + d for r in rates) for d in range(4)]
    assert all(60 < count < 140 for count in per_decade), per_decade
    assert {t["n_layer"] for t in drawn} == {1, 2, 3, 4} and {t["dropout"] for t in drawn} == {0.0, 0.2}


def test_a_drawn_key_replaces_the_base_request_in_either_spelling_and_bad_draws_are_refused():
    assert merged({"preset": "tiny", "LEARNING_RATE": 0.01}, {"learning_rate": 0.1}) == {
        "preset": "tiny", "learning_rate": 0.1}
    made = trials(sweep(space={"learning_rate": {"values": [0.001]}}, trials=1), lambda job_id: f"model-{job_id}")
    assert [(t.job_id, t.model_id) for t in made] == [("s1-t0", "model-s1-t0")]
    with pytest.raises(Rejected) as refused:
        trials(sweep(space={"learnig_rate": {"values": [0.001]}}), str)
    assert refused.value.field == "space.learnig_rate" and "learning_rate" in refused.value.reason
    with pytest.raises(Rejected) as refused:
        trials(sweep(space={"dropout": {"values": [2.0]}}), str)
    assert refused.value.field == "space.dropout"


def test_the_median_rule_stops_only_a_trial_worse_than_its_peers_after_the_grace_period():
    rule = EarlyStopping(rule="median", min_step=20, min_trials=2)
    histories = {0: [(10, 3.0), (20, 2.0)], 1: [(10, 3.1), (20, 2.1)], 2: [(10, 3.2), (20, 4.0)],
                 3: [(10, 9.0)]}
    stops = to_stop(rule, histories, running={0, 1, 2, 3})
    assert [(s.index, s.step, s.value) for s in stops] == [(2, 20, 3.2)]  # its best so far, 3.2 > median 2.05
    assert to_stop(EarlyStopping(rule="median", min_step=30, min_trials=2), histories, {0, 1, 2, 3}) == []
    assert to_stop(EarlyStopping(rule="median", min_step=20, min_trials=3), histories, {2}) == []  # 2 peers only
    assert to_stop(EarlyStopping(rule="none"), histories, {2}) == []


def test_successive_halving_keeps_the_best_third_at_each_rung():
    rule = EarlyStopping(rule="asha", min_step=10, reduction=3)
    assert rungs(rule, 100) == [10, 30, 90]
    histories = {i: [(10, float(i))] for i in range(6)}  # six trials at rung 10: the best two go on
    stops = to_stop(rule, histories, running=set(range(6)))
    assert [s.index for s in stops] == [2, 3, 4, 5]
    assert to_stop(rule, {0: [(10, 1.0)], 1: [(10, 2.0)]}, {0, 1}) == []  # fewer than 3 at the rung: none yet
    assert best_until([(10, 3.0), (20, 1.0), (30, 2.0)], 25) == 1.0
