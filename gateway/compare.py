"""Runs side by side: `GET /api/v1/compare?runs=a,b,...`.

Each run is a model version. The comparison lists every hyperparameter of the runs (the resolved configuration
their training started with, flattened to `model.n_layer`, `train.learning_rate`, ...) with the ones that differ
named, their final and best metrics, their latest evaluation, and their loss histories from the log (by step and by
wall time since the run started), which the dashboard draws on one chart.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.bodies import CompareQuery
from gateway.context import gateway_of, owner_of
from gateway.errors import ApiError
from gateway.inputs import query
from gateway.openapi import operation
from gateway.views import EvaluationView, View
from infra.db import queries
from infra.db.tables import Model
from model.config import ConfigError, resolve_hyperparameters

MOST_RUNS = 10
MOST_POINTS = 2000  # of each curve of each run


class History(View):
    train: list[tuple[int, float, float]] = Field(description=(
        "(step, training loss, seconds since the run started); at most 2000, evenly spaced"))
    val: list[tuple[int, float, float]] = Field(description="(step, validation loss, seconds since the run started)")


class ComparedRun(View):
    ref: str = Field(description="As asked for.")
    id: str
    name: str
    version: int | None
    parent_id: str | None
    status: str
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    best_step: int | None
    latest_evaluation: EvaluationView | None
    history: History


class Comparison(View):
    runs: list[ComparedRun]
    parameters: dict[str, list[Any]] = Field(description="Every hyperparameter, with each run's value in order.")
    differences: list[str] = Field(description="The hyperparameters whose values are not all the same.")


def flat_hyperparameters(row: Model) -> dict[str, Any]:
    """The configuration the run trained with (as its TrainStarted said), else as its request resolves; with its
    tokenizer and dataset."""
    config = row.config or {}
    if not config:
        try:
            model_config, train_config = resolve_hyperparameters(row.hyperparameters or {})
            config = {"model": asdict(model_config), "train": asdict(train_config)}
        except ConfigError:
            config = {"requested": row.hyperparameters or {}}
    flat = {f"{part}.{key}": value for part, values in config.items() if isinstance(values, dict)
            for key, value in values.items()}
    preset = (row.hyperparameters or {}).get("preset")
    return dict(sorted({**flat, "preset": preset, "tokenizer": row.tokenizer, "dataset": row.dataset_key}.items()))


def side_by_side(runs: list[dict[str, Any]]) -> tuple[dict[str, list[Any]], list[str]]:
    """Each key's values in run order (None where a run lacks it), and the keys whose values differ."""
    keys = sorted({key for run in runs for key in run})
    parameters = {key: [run.get(key) for run in runs] for key in keys}
    return parameters, [key for key, values in parameters.items() if any(v != values[0] for v in values[1:])]


def thinned(points: list[Any], most: int = MOST_POINTS) -> list[Any]:
    """At most `most` points, evenly spaced, the first and the last kept: a chart's worth of a long run."""
    if len(points) <= most:
        return points
    stride = (len(points) - 1) / (most - 1)
    return [points[round(i * stride)] for i in range(most)]


async def history(session: Any, job_id: str | None) -> History:
    train: list[tuple[int, float, float]] = []
    val: list[tuple[int, float, float]] = []
    started = None
    for row in await queries.read_log(session, job_id, 0) if job_id else []:
        if row.type == "TrainStarted" and started is None:
            started = row.time
        elapsed = (row.time - started).total_seconds() if started is not None else 0.0
        if row.type == "TrainProgress":
            train.append((row.data["step"], row.data["loss"], round(elapsed, 3)))
        elif row.type == "ValidationCompleted":
            val.append((row.data["step"], row.data["val_loss"], round(elapsed, 3)))
    return History(train=thinned(train), val=thinned(val))


@operation(summary="Compare runs side by side", tag="registry", query=CompareQuery, responses={200: Comparison})
async def compare(request: Request) -> JSONResponse:
    refs = query(request, CompareQuery).refs
    if not 2 <= len(refs) <= MOST_RUNS:
        raise ApiError(422, "invalid", f"runs: give 2 to {MOST_RUNS} model versions separated by commas, not "
                                       f"{len(refs)}", "runs")
    owner = owner_of(request)
    compared: list[ComparedRun] = []
    async with gateway_of(request).sessions() as session:
        for ref in refs:
            row = await queries.find_model(session, owner, ref)
            if row is None:
                raise ApiError(404, "not_found", f"runs: there is no model version {ref!r}", "runs")
            evaluation = await queries.latest_evaluation(session, row.id)
            compared.append(ComparedRun(
                ref=ref, id=row.id, name=row.name, version=row.version, parent_id=row.parent_id, status=row.status,
                hyperparameters=flat_hyperparameters(row), metrics=row.metrics or {}, best_step=row.best_step,
                latest_evaluation=EvaluationView.of(evaluation) if evaluation is not None else None,
                history=await history(session, row.train_job_id),
            ))
    parameters, differences = side_by_side([run.hyperparameters for run in compared])
    return JSONResponse(Comparison(runs=compared, parameters=parameters, differences=differences).json_dict())


routes = [Route("/compare", compare, methods=["GET"])]
