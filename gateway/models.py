"""Models: create one (which starts its training), read, list, delete, and continue training.

The gateway names the new model and its job, publishes `TrainRequested`, and reads everything back from the
projection. Hyperparameters and tokenizer options are validated here with the model library's own checks, so a
typo is a 422 that names the field instead of a failed job later.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from events import CancelRequested, DatasetRef, ModelDeleted, TrainRequested, check_text, new_id
from gateway.bodies import CreateModelBody, DatasetChoice, ModelsQuery, TrainMoreBody
from gateway.context import gateway_of, owner_of
from gateway.datasets import dataset_key
from gateway.errors import ApiError, invalid, not_found
from gateway.inputs import json_body, query, too_large
from gateway.jobs import FINISHED, submit, submitted_response
from gateway.openapi import operation
from gateway.views import (
    CheckpointView,
    DeletedModel,
    EvaluationView,
    ModelDetail,
    ModelList,
    ModelStatusView,
    ModelView,
    Submitted,
)
from infra.db import queries
from infra.db.tables import Model
from infra.objectstore import artifacts
from model.config import ALIASES, ConfigError, resolve_hyperparameters
from model.tokenizers import tokenizer_options

BUSY = ("pending", "training")


def check_hyperparameters(hp: dict[str, Any]) -> None:
    try:
        resolve_hyperparameters(hp)
    except ConfigError as error:
        raise invalid(f"hyperparameters.{error.field}", error.message) from None


def check_tokenizer_options(kind: str, options: dict[str, int]) -> None:
    try:
        tokenizer_options(kind, options)
    except ConfigError as error:
        field = "tokenizer" if error.field == "tokenizer" else f"tokenizer_options.{error.field}"
        raise invalid(field, error.message) from None


def merge_hyperparameters(original: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The model's own hyperparameters with `overrides` on top, whichever spelling (`max_iters`, `MAX_ITERS`)."""
    canonical = {ALIASES.get(key, key) for key in overrides}
    kept = {k: v for k, v in original.items() if ALIASES.get(k, k) not in canonical}
    return {**kept, **overrides}


async def dataset_ref(request: Request, choice: DatasetChoice, field: str) -> DatasetRef:
    if choice.id is not None:
        return DatasetRef(key=await dataset_key(request, choice.id, f"{field}.id"))
    assert choice.text is not None
    check_text(choice.text, f"{field}.text")
    limit = gateway_of(request).settings.max_dataset_bytes
    if len(choice.text.encode()) > limit:
        raise too_large(limit)
    return DatasetRef(text=choice.text)


async def visible_model(request: Request, model_id: str) -> Model:
    async with gateway_of(request).sessions() as session:
        row = await queries.get_model(session, owner_of(request), model_id)
    if row is None:
        raise not_found("model", model_id)
    return row


@operation(summary="Create a model and start training it", tag="models", body=CreateModelBody,
           responses={202: Submitted})
async def create_model(request: Request) -> JSONResponse:
    """The body mirrors TrainRequested. Answers 202 with the model's and the job's ids and the job's event stream."""
    gateway = gateway_of(request)
    body = await json_body(request, CreateModelBody)
    check_hyperparameters(body.hyperparameters)
    check_tokenizer_options(body.tokenizer, body.tokenizer_options)
    async with gateway.sessions() as session:
        if await queries.model_named(session, owner_of(request), body.name) is not None:
            raise ApiError(409, "name_taken", f"name: a model named {body.name!r} exists already", "name")
    dataset = await dataset_ref(request, body.dataset, "dataset")
    model_id, job_id = new_id(), new_id()
    command = TrainRequested(
        job_id=job_id, model_id=model_id, model_name=body.name, description=body.description, dataset=dataset,
        tokenizer=body.tokenizer, tokenizer_options=body.tokenizer_options, hyperparameters=body.hyperparameters,
        owner=owner_of(request),
    )
    submitted = await submit(request, gateway.topics.train_requested, command, job_id, model_id)
    return submitted_response(submitted, f"/api/v1/models/{model_id}")


@operation(summary="List models", tag="models", query=ModelsQuery, responses={200: ModelList})
async def list_models(request: Request) -> JSONResponse:
    params = query(request, ModelsQuery)
    async with gateway_of(request).sessions() as session:
        rows, total = await queries.list_models(
            session, owner_of(request), status=params.status, name=params.name, limit=params.limit,
            offset=params.offset,
        )
    listing = ModelList(items=[ModelView.of(r) for r in rows], total=total, limit=params.limit,
                        offset=params.offset)
    return JSONResponse(listing.json_dict())


@operation(summary="Get a model", tag="models", responses={200: ModelDetail})
async def get_model(request: Request) -> JSONResponse:
    """Status, progress, configuration, metrics, checkpoints and the latest evaluation."""
    model_id = request.path_params["model_id"]
    async with gateway_of(request).sessions() as session:
        row = await queries.get_model(session, owner_of(request), model_id)
        if row is None:
            raise not_found("model", model_id)
        checkpoints = await queries.checkpoints(session, model_id)
        evaluation = await queries.latest_evaluation(session, model_id)
    detail = ModelDetail(
        **ModelView.of(row).model_dump(), checkpoints=[CheckpointView.of(c) for c in checkpoints],
        latest_evaluation=EvaluationView.of(evaluation) if evaluation is not None else None,
    )
    return JSONResponse(detail.json_dict())


@operation(summary="A model's training status", tag="models", responses={200: ModelStatusView})
async def model_status(request: Request) -> JSONResponse:
    model_id = request.path_params["model_id"]
    owner = owner_of(request)
    async with gateway_of(request).sessions() as session:
        row = await queries.get_model(session, owner, model_id)
        if row is None:
            raise not_found("model", model_id)
        job = await queries.get_job(session, owner, row.train_job_id) if row.train_job_id else None
    view = ModelStatusView(
        model_id=row.id, name=row.name, status=row.status, progress=row.progress or 0.0, step=row.step or 0,
        max_iters=row.max_iters, loss=job.loss if job else None, val_loss=job.val_loss if job else None,
        eta_s=job.eta_s if job else None, job_id=row.train_job_id, error=row.error,
    )
    return JSONResponse(view.json_dict())


@operation(summary="Delete a model", tag="models", responses={200: DeletedModel})
async def delete_model(request: Request) -> JSONResponse:
    """Stops its training if it is running, marks it deleted and removes its checkpoints and tokenizer."""
    gateway = gateway_of(request)
    owner = owner_of(request)
    row = await visible_model(request, request.path_params["model_id"])
    if row.train_job_id:
        async with gateway.sessions() as session:
            job = await queries.get_job(session, owner, row.train_job_id)
        if job is not None and job.status not in FINISHED:
            cancel = CancelRequested(job_id=job.id, owner=owner, reason="the model was deleted")
            await gateway.publisher.command(gateway.topics.job_control, job.id, cancel)
    job_id = new_id()
    fact = ModelDeleted(job_id=job_id, seq=1, producer=gateway.producer_id, owner=owner, kind="delete",
                        model_id=row.id)
    await gateway.publisher.fact(fact)
    await gateway.store.delete_prefix(artifacts.model_prefix(row.id))

    async def gone(session: Any) -> bool | None:
        return True if await queries.get_model(session, owner, row.id) is None else None

    await queries.wait_for(gateway.sessions, gone, gateway.settings.submit_wait_s)
    return JSONResponse(DeletedModel(model_id=row.id, job_id=job_id).json_dict())


@operation(summary="Continue training from the latest checkpoint", tag="models", body=TrainMoreBody,
           responses={202: Submitted})
async def train_more(request: Request) -> JSONResponse:
    """`hyperparameters.max_iters` counts the additional iterations; the dataset defaults to the model's own."""
    gateway = gateway_of(request)
    row = await visible_model(request, request.path_params["model_id"])
    body = await json_body(request, TrainMoreBody, empty_ok=True)
    if row.status in BUSY:
        raise ApiError(409, "conflict", f"model {row.id!r} is {row.status}; wait for it to finish or cancel it")
    if row.trained_at is None:
        raise ApiError(409, "not_trained", f"model {row.id!r} has no checkpoint to continue from")
    hyperparameters = merge_hyperparameters(row.hyperparameters or {}, body.hyperparameters)
    check_hyperparameters(hyperparameters)
    if body.dataset is not None:
        dataset = await dataset_ref(request, body.dataset, "dataset")
    elif row.dataset_key:
        dataset = DatasetRef(key=row.dataset_key)
    else:
        raise invalid("dataset", "the model has no stored dataset to continue with; give one")
    job_id = new_id()
    command = TrainRequested(
        job_id=job_id, model_id=row.id, model_name=row.name, description=row.description or "", dataset=dataset,
        tokenizer=row.tokenizer or "char", hyperparameters=hyperparameters, owner=owner_of(request),
    )
    submitted = await submit(request, gateway.topics.train_requested, command, job_id, row.id)
    return submitted_response(submitted)


routes = [
    Route("/models", create_model, methods=["POST"]),
    Route("/models/create", create_model, methods=["POST"]),
    Route("/models", list_models, methods=["GET"]),
    Route("/models/{model_id}", get_model, methods=["GET"]),
    Route("/models/{model_id}", delete_model, methods=["DELETE"]),
    Route("/models/{model_id}/status", model_status, methods=["GET"]),
    Route("/models/{model_id}/train", train_more, methods=["POST"]),
]
