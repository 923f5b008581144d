"""Models: create one (which starts its training), read, list, delete, and continue training.

The gateway names the new model and its job, publishes `TrainRequested`, and reads everything back from the
projection. Hyperparameters and tokenizer options are validated here with the model library's own checks, so a
typo is a 422 that names the field (and suggests the name meant) instead of a failed job later. Every route takes
a model's id or its name.
"""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from events import CancelRequested, DatasetRef, ModelDeleted, TrainRequested, check_text, new_id
from gateway.bodies import CreateModelBody, DatasetChoice, ModelsQuery, TrainMoreBody
from gateway.context import gateway_of, owner_of
from gateway.datasets import check_room, check_tokenizer_options, store_dataset, visible_dataset
from gateway.errors import ApiError, invalid
from gateway.inputs import json_body, model_ref, query, too_large
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
from infra.db.tables import Dataset, Model
from infra.objectstore import artifacts
from model.config import ALIASES, ConfigError, Hyperparameters, resolve_hyperparameters
from model.distributed import check_world

BUSY = ("pending", "training")
STOP_WAIT_S = 20.0  # a cancelled run stops within its grace period (15 s) and a checkpoint


def check_hyperparameters(hp: dict[str, Any]) -> Hyperparameters:
    try:
        return resolve_hyperparameters(hp)
    except ConfigError as error:
        raise invalid(f"hyperparameters.{error.field}", error.message) from None


def check_world_of(request: Request, processes: int, hosts: int, hp: Hyperparameters) -> None:
    """Several training processes or hosts need a global batch they can share, and no more of them than a job may
    have."""
    settings = gateway_of(request).settings
    try:
        check_world(processes, hosts, hp.train.batch_size, hp.train.grad_accum, settings.max_train_processes,
                    settings.max_train_hosts)
    except ConfigError as error:
        raise invalid(error.field, error.message) from None


def tokenizer_options_of(hyperparameters: dict[str, Any], options: dict[str, int]) -> tuple[dict, dict[str, int]]:
    """`vocab_size` is the tokenizer's, wherever the request puts it: moved from the hyperparameters to the options."""
    if "vocab_size" not in hyperparameters:
        return hyperparameters, options
    rest = {k: v for k, v in hyperparameters.items() if k != "vocab_size"}
    if "vocab_size" in options and options["vocab_size"] != hyperparameters["vocab_size"]:
        raise invalid("hyperparameters.vocab_size", "given twice with different values (also in tokenizer_options)")
    return rest, {**options, "vocab_size": hyperparameters["vocab_size"]}


def merge_hyperparameters(original: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The model's own hyperparameters with `overrides` on top, whichever spelling (`max_iters`, `MAX_ITERS`)."""
    canonical = {ALIASES.get(key, key) for key in overrides}
    kept = {k: v for k, v in original.items() if ALIASES.get(k, k) not in canonical}
    return {**kept, **overrides}


def check_length(size: int, tokenizer: str, hp: Hyperparameters, field: str) -> None:
    """A text too short to hold out a validation split of at least two tokens is refused now, not as a failed job
    later. `size` is its characters, or for bpe its UTF-8 bytes: no tokenizer makes more tokens than that."""
    needed = int(2 / hp.train.val_fraction) + 1
    if size < needed:
        unit = "bytes" if tokenizer == "bpe" else "characters"
        raise invalid(field, f"the text is too short to train on: {size} {unit}; at least {needed} are needed to "
                             f"hold out a validation split of {hp.train.val_fraction:g}")


async def dataset_ref(request: Request, choice: DatasetChoice, field: str,
                      training: bool = False) -> tuple[DatasetRef, int, int]:
    """The dataset a body names, and its size in characters and in bytes. A training text given inline becomes one of
    the caller's datasets (the train agent stores it so), so with `training` it must fit the caller's quotas."""
    if choice.id is not None:
        row: Dataset = await visible_dataset(request, choice.id, f"{field}.id")
        # A large upload's characters are known once it is tokenized; its bytes bound them until then.
        return DatasetRef(key=row.key), row.characters if row.characters is not None else row.bytes, row.bytes
    assert choice.text is not None
    check_text(choice.text, f"{field}.text")
    data = choice.text.encode()
    settings = gateway_of(request).settings
    if len(data) > settings.max_dataset_bytes:
        raise too_large(settings.max_dataset_bytes)
    if len(data) > settings.max_inline_dataset_bytes:  # a Kafka message holds about 1 MiB: keep the text as an upload
        view, _ = await store_dataset(request, f"{field} of a request", choice.text, data)
        return DatasetRef(key=view.key), len(choice.text), len(data)
    if training:
        await check_room(request, len(data), hashlib.sha256(data).hexdigest())
    return DatasetRef(text=choice.text), len(choice.text), len(data)


async def visible_model(request: Request) -> Model:
    """The version the path names, by id, name (its newest version), `name@alias` or `name/version`: 404 naming
    what was typed when there is none for the caller."""
    named = model_ref(request)
    async with gateway_of(request).sessions() as session:
        row = await queries.find_model(session, owner_of(request), named)
    if row is None:
        raise ApiError(404, "not_found", f"there is no model with the id or name {named!r}", "model")
    return row


@operation(summary="Create a model and start training it", tag="models", body=CreateModelBody,
           responses={202: Submitted})
async def create_model(request: Request) -> JSONResponse:
    """The body mirrors TrainRequested. Each run is a new version of its name (the first when the name is new).
    Answers 202 with the version's and the job's ids and the job's event stream."""
    gateway = gateway_of(request)
    body = await json_body(request, CreateModelBody)
    hyperparameters, options = tokenizer_options_of(body.hyperparameters, body.tokenizer_options)
    hp = check_hyperparameters(hyperparameters)
    check_world_of(request, body.processes, body.hosts, hp)
    check_tokenizer_options(body.tokenizer, options)
    dataset, characters, size = await dataset_ref(request, body.dataset, "dataset", training=True)
    check_length(size if body.tokenizer == "bpe" else characters, body.tokenizer, hp,
                 "dataset.id" if body.dataset.id else "dataset.text")
    model_id, job_id = new_id(), new_id()
    command = TrainRequested(
        job_id=job_id, model_id=model_id, model_name=body.name, description=body.description, dataset=dataset,
        tokenizer=body.tokenizer, tokenizer_options=options, hyperparameters=hyperparameters,
        owner=owner_of(request), processes=body.processes, hosts=body.hosts,
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
        aliases = await queries.aliases_of(session, [r.id for r in rows])
    listing = ModelList(items=[ModelView.of(r, aliases.get(r.id)) for r in rows], total=total, limit=params.limit,
                        offset=params.offset)
    return JSONResponse(listing.json_dict())


@operation(summary="Get a model version", tag="models", responses={200: ModelDetail})
async def get_model(request: Request) -> JSONResponse:
    """By id, name (its newest version), `name@alias`, or `/models/{name}/{version}`. Its version, parent and
    aliases, status, progress, configuration, metrics, checkpoints (exactly one of them the best) and which one serves,
    and the latest evaluation."""
    row = await visible_model(request)
    async with gateway_of(request).sessions() as session:
        checkpoints = await queries.checkpoints(session, row.id)
        evaluation = await queries.latest_evaluation(session, row.id)
        aliases = await queries.aliases_of(session, [row.id])
    detail = ModelDetail(
        **ModelView.of(row, aliases.get(row.id)).model_dump(), checkpoints=[CheckpointView.of(c) for c in checkpoints],
        latest_evaluation=EvaluationView.of(evaluation) if evaluation is not None else None,
    )
    return JSONResponse(detail.json_dict())


@operation(summary="A model's training status", tag="models", responses={200: ModelStatusView})
async def model_status(request: Request) -> JSONResponse:
    row = await visible_model(request)
    async with gateway_of(request).sessions() as session:
        job = await queries.get_job(session, owner_of(request), row.train_job_id) if row.train_job_id else None
    view = ModelStatusView(
        model_id=row.id, name=row.name, status=row.status, progress=row.progress or 0.0, step=row.step or 0,
        max_iters=row.max_iters, loss=job.loss if job else None, val_loss=job.val_loss if job else None,
        eta_s=job.eta_s if job else None, job_id=row.train_job_id, error=row.error,
    )
    return JSONResponse(view.json_dict())


@operation(summary="Delete a model", tag="models", responses={200: DeletedModel})
async def delete_model(request: Request) -> JSONResponse:
    """Stops its training if it is running, marks it deleted and removes its files: checkpoints (the one its
    stopping run writes last included), tokenizer, configuration."""
    gateway = gateway_of(request)
    owner = owner_of(request)
    row = await visible_model(request)
    running = None
    if row.train_job_id:
        async with gateway.sessions() as session:
            running = await queries.get_job(session, owner, row.train_job_id)
        if running is not None and running.status not in FINISHED:
            cancel = CancelRequested(job_id=running.id, owner=owner, reason="the model was deleted")
            await gateway.publisher.command(gateway.topics.job_control, running.id, cancel)
        else:
            running = None
    job_id = new_id()
    fact = ModelDeleted(job_id=job_id, seq=1, producer=gateway.producer_id, owner=owner, kind="delete",
                        model_id=row.id)
    await gateway.publisher.fact(fact)
    if running is not None:  # a stopping run writes a last checkpoint: its files go once it has ended
        async def ended(session: Any) -> bool | None:
            job = await queries.get_job(session, owner, running.id)
            return True if job is None or job.status in FINISHED else None

        await queries.wait_for(gateway.sessions, ended, STOP_WAIT_S, interval_s=0.2)
    await gateway.store.delete_prefix(artifacts.model_prefix(row.id))

    async def gone(session: Any) -> bool | None:
        return True if await queries.get_model(session, owner, row.id) is None else None

    await queries.wait_for(gateway.sessions, gone, gateway.settings.submit_wait_s)
    return JSONResponse(DeletedModel(model_id=row.id, job_id=job_id).json_dict())


@operation(summary="Continue training from the latest checkpoint", tag="models", body=TrainMoreBody,
           responses={202: Submitted})
async def train_more(request: Request) -> JSONResponse:
    """From the version's latest checkpoint, whatever ended its run (completed, cancelled, failed after a
    checkpoint), as a new version of its name whose parent it is. `hyperparameters.max_iters` counts the additional
    iterations; the dataset defaults to the version's own."""
    gateway = gateway_of(request)
    row = await visible_model(request)
    body = await json_body(request, TrainMoreBody, empty_ok=True)
    named = model_ref(request)
    if row.status in BUSY:
        raise ApiError(409, "conflict", f"model {named!r} is {row.status}; wait for it to finish or cancel it")
    if not row.latest_checkpoint:
        raise ApiError(409, "no_checkpoint", f"model {named!r} has no checkpoint to continue from yet")
    hyperparameters = merge_hyperparameters(row.hyperparameters or {}, body.hyperparameters)
    hyperparameters.pop("vocab_size", None)  # the model keeps its tokenizer
    check_world_of(request, body.processes, body.hosts, check_hyperparameters(hyperparameters))
    if body.dataset is not None:
        dataset, _, _ = await dataset_ref(request, body.dataset, "dataset", training=True)
    elif row.dataset_key and await gateway.store.exists(row.dataset_key):
        dataset = DatasetRef(key=row.dataset_key)
    else:
        raise invalid("dataset", "the model's own dataset is not stored any more (deleted?); give one")
    model_id, job_id = new_id(), new_id()
    command = TrainRequested(
        job_id=job_id, model_id=model_id, parent_id=row.id, model_name=row.name, description=row.description or "",
        dataset=dataset, tokenizer=row.tokenizer or "char", hyperparameters=hyperparameters, owner=owner_of(request),
        processes=body.processes, hosts=body.hosts,
    )
    submitted = await submit(request, gateway.topics.train_requested, command, job_id, model_id)
    return submitted_response(submitted, f"/api/v1/models/{model_id}")


routes = [
    Route("/models", create_model, methods=["POST"]),
    Route("/models/create", create_model, methods=["POST"]),
    Route("/models", list_models, methods=["GET"]),
    Route("/models/{model}", get_model, methods=["GET"]),
    Route("/models/{model}", delete_model, methods=["DELETE"]),
    Route("/models/{model}/status", model_status, methods=["GET"]),
    Route("/models/{model}/train", train_more, methods=["POST"]),
]
