"""The parts of a sweep's messages: a search space, an early-stopping rule, a trial and a trial's result.

A sweep (`SweepRequested`) is many training runs of one base request whose hyperparameters are drawn from a search
space; its trials are ordinary training jobs, each a version of the sweep's model name. These value types are used
by the sweep command (events.commands) and its facts (events.facts).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from events.fields import Message

Value = float | int | str | bool


class ParameterSpace(Message):
    """Where one hyperparameter's values come from: a list (`values`: every one in a grid, one drawn at random in
    a random search), or a range (`min`..`max`, uniform, or log-uniform with `scale: log`, as for learning rates;
    whole numbers with `integer`)."""

    values: list[Value] | None = Field(default=None, min_length=1, max_length=100)
    min: float | None = None
    max: float | None = None
    scale: Literal["linear", "log"] = "linear"
    integer: bool = False

    @model_validator(mode="after")
    def _a_list_or_a_range(self) -> ParameterSpace:
        ranged = self.min is not None or self.max is not None
        if (self.values is None) == (not ranged):
            raise ValueError("give `values` (a list), or `min` and `max` (a range), not both")
        if ranged:
            if self.min is None or self.max is None or not self.min < self.max:
                raise ValueError("a range needs `min` < `max`")
            if self.scale == "log" and self.min <= 0:
                raise ValueError("a log-uniform range needs `min` > 0")
        return self


class EarlyStopping(Message):
    """Cancel trials that do worse than their peers at the same step.

    `median`: a trial whose best metric so far is worse than the median of the other trials' best at that step
    (with at least `min_trials` of them there) stops. `asha` (successive halving): at the rungs `min_step`,
    `min_step` x `reduction`, ... a trial stops unless it is in the best 1/`reduction` of the trials that reached
    the rung. Nothing stops before `min_step`."""

    rule: Literal["none", "median", "asha"] = "none"
    min_step: int = Field(default=100, ge=1, le=10**9, description="No trial stops before this step (its grace "
                                                                  "period).")
    min_trials: int = Field(default=3, ge=1, le=100, description="median: the peers a comparison needs.")
    reduction: int = Field(default=3, ge=2, le=8, description="asha: the keep-one-in-N factor between rungs.")


class SweepTrial(Message):
    index: int = Field(ge=0)
    job_id: str
    model_id: str
    parameters: dict[str, Value] = Field(description="The hyperparameters drawn for it (over the base request's).")


class TrialResult(Message):
    index: int = Field(ge=0)
    job_id: str
    model_id: str
    version: int | None = None
    value: float = Field(description="The sweep's metric: the trial's lowest.")
    step: int
    parameters: dict[str, Value]
