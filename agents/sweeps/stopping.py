"""Early stopping: which running trials do worse than their peers at the same step. Pure functions of the trials'
metric histories, so any worker that holds the sweep decides the same.

A history is a trial's (step, value) pairs in step order; a trial's standing at a step is its best (lowest) value
up to that step, so a noisy last validation does not stop a trial that did well before.
"""

from __future__ import annotations

import statistics
from bisect import bisect_right
from dataclasses import dataclass

from events.sweeps import EarlyStopping

History = list[tuple[int, float]]


@dataclass(frozen=True)
class Stop:
    index: int
    step: int
    value: float
    reason: str


def best_until(history: History, step: int) -> float | None:
    """The lowest value at or before `step`; None when the trial had none yet."""
    upto = history[:bisect_right([s for s, _ in history], step)]
    return min((value for _, value in upto), default=None)


def to_stop(rule: EarlyStopping, histories: dict[int, History], running: set[int]) -> list[Stop]:
    if rule.rule == "median":
        return _median(rule, histories, running)
    if rule.rule == "asha":
        return _asha(rule, histories, running)
    return []


def _median(rule: EarlyStopping, histories: dict[int, History], running: set[int]) -> list[Stop]:
    stops = []
    for index in sorted(running):
        history = histories.get(index) or []
        if not history or history[-1][0] < rule.min_step:
            continue
        step = history[-1][0]
        mine = best_until(history, step)
        peers = [best_until(other, step) for i, other in histories.items()
                 if i != index and other and other[-1][0] >= step]
        peers = [value for value in peers if value is not None]
        if mine is None or len(peers) < rule.min_trials:
            continue
        median = statistics.median(peers)
        if mine > median:
            stops.append(Stop(index, step, mine, f"median stopping: best {rule_metric(mine)} at step {step} is worse "
                                                 f"than the median {rule_metric(median)} of {len(peers)} other trials"))
    return stops


def rungs(rule: EarlyStopping, up_to: int) -> list[int]:
    found, rung = [], rule.min_step
    while rung <= up_to:
        found.append(rung)
        rung *= rule.reduction
    return found


def _asha(rule: EarlyStopping, histories: dict[int, History], running: set[int]) -> list[Stop]:
    stops = []
    for index in sorted(running):
        history = histories.get(index) or []
        if not history:
            continue
        for rung in reversed(rungs(rule, history[-1][0])):  # the highest rung it reached decides
            at_rung = {i: best_until(other, rung) for i, other in histories.items() if other and other[-1][0] >= rung}
            values = sorted(v for v in at_rung.values() if v is not None)
            mine = at_rung.get(index)
            keep = len(values) // rule.reduction
            if mine is None or len(values) < rule.reduction:
                break
            if mine > values[max(keep, 1) - 1]:
                stops.append(Stop(index, rung, mine, f"successive halving: at rung {rung} it is not in the best "
                                                     f"{max(keep, 1)} of the {len(values)} trials that reached it"))
            break
    return stops


def rule_metric(value: float) -> str:
    return f"{value:.4f}"
