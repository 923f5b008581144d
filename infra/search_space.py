"""The trials of a sweep, drawn from its search space: every combination of the lists (grid), or independent draws
(random: uniform, log-uniform, whole numbers, or one of a list), repeatable from the sweep's seed. Each draw is
checked as a whole training request would be, so a space that cannot train is refused before any trial starts."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

from events import Rejected, SweepRequested
from events.sweeps import ParameterSpace, SweepTrial, Value
from model.config import ALIASES, ConfigError, resolve_hyperparameters

MOST_TRIALS = 100


def trial_job_id(sweep_id: str, index: int) -> str:
    return f"{sweep_id}-t{index}"


def draw(command: SweepRequested) -> list[dict[str, Value]]:
    """Each trial's hyperparameters from the space (not yet merged with the base request's)."""
    names = list(command.space)
    if command.method == "grid":
        ranged = [name for name in names if command.space[name].values is None]
        if ranged:
            raise Rejected(f"space.{ranged[0]}: a grid takes lists of values, not ranges (use method random)",
                           f"space.{ranged[0]}")
        size = math.prod(len(command.space[name].values or ()) for name in names)
        if size > MOST_TRIALS:
            raise Rejected(f"space: the grid has {size} combinations; at most {MOST_TRIALS}", "space")
        return [dict(zip(names, combination, strict=True))
                for combination in itertools.product(*(command.space[name].values or () for name in names))]
    rng = random.Random(command.seed)
    return [{name: _one(command.space[name], rng) for name in names} for _ in range(command.trials)]


def _one(space: ParameterSpace, rng: random.Random) -> Value:
    if space.values is not None:
        return rng.choice(space.values)
    assert space.min is not None and space.max is not None
    if space.scale == "log":
        value = math.exp(rng.uniform(math.log(space.min), math.log(space.max)))
    else:
        value = rng.uniform(space.min, space.max)
    if space.integer:
        return max(math.ceil(space.min), min(math.floor(space.max), round(value)))
    return float(f"{value:.6g}")


def merged(base: dict[str, Any], parameters: dict[str, Value]) -> dict[str, Any]:
    """The base request's hyperparameters with a trial's over them; a key the space names (in either spelling)
    replaces the base's."""
    drawn = {ALIASES.get(name, name) for name in parameters}
    return {**{k: v for k, v in base.items() if ALIASES.get(k, k) not in drawn}, **parameters}


def trials(command: SweepRequested, model_id_of: Any) -> list[SweepTrial]:
    """The sweep's trials, each checked as a training request; Rejected naming `space.<name>` (or `hyperparameters`)
    when one could not train."""
    found = []
    for index, parameters in enumerate(draw(command)):
        try:
            resolve_hyperparameters(merged(command.hyperparameters, parameters))
        except ConfigError as error:
            field = f"space.{error.field}" if error.field in parameters else f"hyperparameters.{error.field}"
            raise Rejected(f"{field}: {error.message} (trial {index}: {parameters})", field) from None
        job_id = trial_job_id(command.job_id, index)
        found.append(SweepTrial(index=index, job_id=job_id, model_id=model_id_of(job_id), parameters=parameters))
    return found
