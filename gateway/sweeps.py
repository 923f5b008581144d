"""Sweeps over HTTP: start one (`POST /api/v1/sweeps`), list them, and read one with its trials live.

The body mirrors SweepRequested. Every trial's hyperparameters are drawn and checked here, with the same code the
agents use, so a space that cannot train is a 422 naming `space.<name>` rather than a failed sweep later. A sweep is
a job: its facts stream at `/api/v1/jobs/{id}/events` and `POST /api/v1/jobs/{id}/cancel` cancels it and its trials.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from events import Rejected, SweepRequested, new_id
from events.commands import TokenizerKind
from events.fields import AliasName, NewModelName
from events.sweeps import EarlyStopping, ParameterSpace
from gateway.bodies import Body, DatasetChoice, Hyperparameters, PageQuery
from gateway.context import gateway_of, owner_of
from gateway.errors import ApiError, not_found
from gateway.inputs import json_body, query
from gateway.jobs import job_view, submit, submitted_response
from gateway.datasets import check_tokenizer_options
from gateway.models import check_hyperparameters, check_length, dataset_ref
from gateway.openapi import operation
from gateway.views import JobList, JobView, Submitted, View
from infra import search_space
from infra.db import queries
from infra.db.tables import Job, Model


class SweepBody(Body):
    """A base training request, a search space over its hyperparameters, and how to search it."""

    name: NewModelName = Field(description="The trials become versions of this model name.")
    description: str = Field(default="", max_length=2000)
    dataset: DatasetChoice
    tokenizer: TokenizerKind = "char"
    tokenizer_options: dict[str, int] = Field(default_factory=dict)
    hyperparameters: Hyperparameters = Field(default_factory=dict, description="The base: a preset and overrides.")
    space: dict[str, ParameterSpace] = Field(min_length=1, max_length=16, description=(
        "Hyperparameter -> `{\"values\": [...]}` or `{\"min\": a, \"max\": b, \"scale\": \"log\"}`."))
    method: Literal["grid", "random"] = "random"
    trials: int = Field(default=8, ge=1, le=100, description="How many a random search draws.")
    metric: Literal["val_loss", "train_loss"] = "val_loss"
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    alias: AliasName | None = Field(default=None, description="Given to the best trial's version at the end.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class TrialView(View):
    index: int
    job_id: str
    model_id: str
    version: int | None = None
    parameters: dict[str, Any]
    status: str = Field(description="Its training job's: accepted, running, completed, failed, cancelled.")
    step: int | None = None
    max_iters: int | None = None
    value: float | None = Field(default=None, description="The sweep's metric: its lowest so far.")
    stopped: str | None = Field(default=None, description="Why early stopping cancelled it.")


class SweepView(JobView):
    trials: list[TrialView] = Field(default_factory=list)


@operation(summary="Start a hyperparameter sweep", tag="sweeps", body=SweepBody, responses={202: Submitted})
async def create_sweep(request: Request) -> JSONResponse:
    gateway = gateway_of(request)
    body = await json_body(request, SweepBody)
    hp = check_hyperparameters(body.hyperparameters)
    options = check_tokenizer_options(body.tokenizer, body.tokenizer_options)
    dataset, characters, size = await dataset_ref(request, body.dataset, "dataset", training=True)
    check_length(size if body.tokenizer == "bpe" else characters, body.tokenizer, hp,
                 "dataset.id" if body.dataset.id else "dataset.text")
    job_id = new_id()
    command = SweepRequested(
        job_id=job_id, model_name=body.name, description=body.description, dataset=dataset, tokenizer=body.tokenizer,
        tokenizer_options=options, hyperparameters=body.hyperparameters, space=body.space, method=body.method,
        trials=body.trials, metric=body.metric, early_stopping=body.early_stopping, alias=body.alias, seed=body.seed,
        owner=owner_of(request))
    try:
        trials = search_space.trials(command, str)
    except Rejected as rejected:
        raise ApiError(422, "invalid", rejected.reason, rejected.field) from None
    # Each trial is a training job of the caller's.
    submitted = await submit(request, gateway.topics.sweep_requested, command, job_id, None, jobs=len(trials))
    return submitted_response(submitted, f"/api/v1/sweeps/{job_id}")


@operation(summary="List sweeps", tag="sweeps", query=PageQuery, responses={200: JobList})
async def list_sweeps(request: Request) -> JSONResponse:
    params = query(request, PageQuery)
    async with gateway_of(request).sessions() as session:
        rows, total = await queries.list_jobs(session, owner_of(request), kinds=["sweep"], limit=params.limit,
                                              offset=params.offset)
        items = [await job_view(request, session, row) for row in rows]
    return JSONResponse(JobList(items=items, total=total, limit=params.limit, offset=params.offset).json_dict())


@operation(summary="A sweep and its trials", tag="sweeps", responses={200: SweepView})
async def get_sweep(request: Request) -> JSONResponse:
    """Its status, best trial so far, and each trial: parameters, version, status, step and metric, live."""
    sweep_id = request.path_params["sweep_id"]
    async with gateway_of(request).sessions() as session:
        row = await queries.get_job(session, owner_of(request), sweep_id)
        if row is None or row.kind != "sweep":
            raise not_found("sweep", sweep_id)
        view = await job_view(request, session, row)
        trials = await _trials(session, row)
    return JSONResponse(SweepView(**view.model_dump(), trials=trials).json_dict())


async def _trials(session: Any, sweep: Job) -> list[TrialView]:
    planned = (sweep.result or {}).get("trials") or []
    stopped = {s["index"]: s["reason"] for s in (sweep.result or {}).get("stopped", [])}
    by_validation = (sweep.result or {}).get("metric", "val_loss") == "val_loss"
    views = []
    for trial in planned:
        job = await session.get(Job, trial["job_id"])
        model = await session.get(Model, trial["model_id"])
        if by_validation:
            value = (model.metrics or {}).get("best_val_loss") if model is not None else None
        else:
            value = job.loss if job is not None else None
        views.append(TrialView(
            index=trial["index"], job_id=trial["job_id"], model_id=trial["model_id"],
            version=model.version if model is not None else None, parameters=trial["parameters"],
            status=job.status if job is not None else "accepted", step=job.step if job is not None else None,
            max_iters=job.max_iters if job is not None else None, value=value, stopped=stopped.get(trial["index"])))
    return views


routes = [
    Route("/sweeps", create_sweep, methods=["POST"]),
    Route("/sweeps", list_sweeps, methods=["GET"]),
    Route("/sweeps/{sweep_id}", get_sweep, methods=["GET"]),
]
