"""Datasets: training text uploaded once (inline JSON or a multipart file) and referred to by id afterwards.

An upload is stored under `datasets/<id>` in the object store, then announced with a `DatasetUploaded` fact; the
projector records it, and the answer waits (briefly) for that row so that a listing right after shows it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from events import (
    DatasetDeleted,
    DatasetUploaded,
    TokenizeRequested,
    check_text,
    dataset_text,
    new_id,
)
from events.datasets import PREVIEW_CHARS
from gateway.bodies import DatasetBody, PageQuery, TokenizeBody
from gateway.context import gateway_of, owner_of
from gateway.errors import ApiError, invalid
from gateway.inputs import json_body, query, too_large
from gateway.jobs import submit, submitted_response
from gateway.openapi import operation
from gateway.quotas import check_datasets
from gateway.views import DatasetList, DatasetView, DeletedDataset, Submitted
from infra.db import queries
from infra.db.tables import Dataset
from infra.objectstore import artifacts
from model.config import ConfigError
from model.tokenizers import tokenizer_options

MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "A UTF-8 text file."},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
    },
}


async def _read_upload(request: Request, limit: int) -> tuple[str, bytes, str]:
    form = await request.form(max_files=1, max_fields=8, max_part_size=64 * 1024)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise invalid("file", "a multipart upload needs a `file` part")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise too_large(limit)
    name = form.get("name")
    name = (name if isinstance(name, str) else "") or upload.filename or "dataset"
    name = name.strip()[:200] or "dataset"
    if "\x00" in name:  # it becomes a row of the projection, and PostgreSQL stores no U+0000
        raise invalid("name", "must not contain a NUL character (U+0000)")
    return name, data, dataset_text(data, "file")


@operation(summary="Upload a dataset", tag="datasets", body=DatasetBody, multipart=MULTIPART_SCHEMA,
           responses={201: DatasetView})
async def upload_dataset(request: Request) -> JSONResponse:
    """Store training text: `{"name", "text"}` as JSON, or a multipart form with a `file` (and a `name`)."""
    gateway = gateway_of(request)
    limit = gateway.settings.max_dataset_bytes
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        name, data, text = await _read_upload(request, limit)
    else:
        body = await json_body(request, DatasetBody)
        name, text = body.name, body.text
        check_text(text, "text")
        data = text.encode()
        if len(data) > limit:
            raise too_large(limit)
    view, created = await store_dataset(request, name, text, data)
    status, location = (201 if created else 200), f"/api/v1/datasets/{view.id}"
    return JSONResponse(view.json_dict(), status_code=status, headers={"Location": location})


async def store_dataset(request: Request, name: str, text: str, data: bytes) -> tuple[DatasetView, bool]:
    """The caller's dataset holding these bytes: the one stored before when the same file came already (same
    SHA-256, same owner; `reused` says so), else a new one, stored and announced. True when it is new."""
    gateway = gateway_of(request)
    digest = hashlib.sha256(data).hexdigest()
    same = await check_room(request, len(data), digest)
    if same is not None:
        return DatasetView.of(same).model_copy(update={"reused": True}), False
    dataset_id = new_id()
    await gateway.store.put_bytes(artifacts.dataset_key(dataset_id), data, "text/plain; charset=utf-8")
    view = await publish_dataset(request, dataset_id, name, size=len(data), sha256=digest,
                                 preview=text[:PREVIEW_CHARS], characters=len(text))
    return view, True


async def check_room(request: Request, size: int, digest: str | None = None) -> Dataset | None:
    """The caller's dataset of exactly these bytes (by `digest`) when there is one; else 429 when one more of `size`
    bytes would pass its quotas."""
    gateway = gateway_of(request)
    owner = owner_of(request)
    async with gateway.sessions() as session:
        same = await queries.dataset_with_digest(session, owner, digest) if digest is not None else None
        if same is None:
            await check_datasets(session, gateway.settings, owner, size)
    return same


async def publish_dataset(request: Request, dataset_id: str, name: str, *, size: int, sha256: str, preview: str,
                          characters: int | None, fmt: str = "text", compression: str = "none",
                          text_column: str = "text") -> DatasetView:
    """Announce a dataset stored at its key, and answer with its row once the projection has it."""
    gateway = gateway_of(request)
    owner = owner_of(request)
    fact = DatasetUploaded(job_id=dataset_id, seq=1, producer=gateway.producer_id, owner=owner, kind="dataset",
                           dataset_id=dataset_id, name=name, key=artifacts.dataset_key(dataset_id), bytes=size,
                           characters=characters, preview=preview, sha256=sha256, format=fmt,
                           compression=compression, text_column=text_column)
    await gateway.publisher.fact(fact)
    row = await queries.wait_for(
        gateway.sessions, lambda s: queries.get_dataset(s, owner, dataset_id), gateway.settings.submit_wait_s
    )
    if row is not None:
        return DatasetView.of(row)
    return DatasetView(id=dataset_id, name=name, key=fact.key, bytes=size, characters=characters, preview=preview,
                       sha256=sha256, created_at=fact.time, status="stored", format=fmt, compression=compression)


@operation(summary="List datasets", tag="datasets", query=PageQuery, responses={200: DatasetList})
async def list_datasets(request: Request) -> JSONResponse:
    page = query(request, PageQuery)
    async with gateway_of(request).sessions() as session:
        rows, total = await queries.list_datasets(session, owner_of(request), page.limit, page.offset)
    listing = DatasetList(items=[DatasetView.of(r) for r in rows], total=total, limit=page.limit, offset=page.offset)
    return JSONResponse(listing.json_dict())


@operation(summary="Get a dataset", tag="datasets", responses={200: DatasetView})
async def get_dataset(request: Request) -> JSONResponse:
    """The dataset with its tokenizations (done, or under way with their progress)."""
    row = await visible_dataset(request, request.path_params["dataset_id"])
    async with gateway_of(request).sessions() as session:
        tokenizations = await queries.tokenizations_of(session, row.id)
    return JSONResponse(DatasetView.of(row, tokenizations).json_dict())


@operation(summary="Tokenize a dataset", tag="datasets", body=TokenizeBody, responses={202: Submitted})
async def tokenize_dataset(request: Request) -> JSONResponse:
    """Start a tokenize job: the dataset's tokens, written once as shards, for every training run that names it with
    the same tokenizer settings. Its progress streams from the job's events."""
    gateway = gateway_of(request)
    row = await visible_dataset(request, request.path_params["dataset_id"])
    body = await json_body(request, TokenizeBody)
    options = check_tokenizer_options(body.tokenizer, body.tokenizer_options)
    job_id = new_id()
    command = TokenizeRequested(job_id=job_id, dataset_id=row.id, tokenizer=body.tokenizer, tokenizer_options=options,
                                sample_bytes=body.sample_bytes, owner=owner_of(request))
    submitted = await submit(request, gateway.topics.tokenize_requested, command, job_id, None)
    return submitted_response(submitted, f"/api/v1/jobs/{job_id}")


@operation(summary="Delete a dataset", tag="datasets", responses={200: DeletedDataset})
async def delete_dataset(request: Request) -> JSONResponse:
    """Removes the stored file, its tokenizations and its listing. Models trained on it keep their checkpoints;
    continuing one of them then needs a dataset given."""
    gateway = gateway_of(request)
    owner = owner_of(request)
    row = await visible_dataset(request, request.path_params["dataset_id"])
    job_id = new_id()
    await gateway.publisher.fact(DatasetDeleted(job_id=job_id, seq=1, producer=gateway.producer_id, owner=owner,
                                                kind="delete", dataset_id=row.id))
    await gateway.store.delete(row.key)
    await gateway.store.delete_prefix(artifacts.tokens_prefix(row.id))  # its tokenizations go with it

    async def gone(session: Any) -> bool | None:
        return True if await queries.get_dataset(session, owner, row.id) is None else None

    await queries.wait_for(gateway.sessions, gone, gateway.settings.submit_wait_s)
    return JSONResponse(DeletedDataset(dataset_id=row.id, job_id=job_id).json_dict())


def check_tokenizer_options(kind: str, options: dict[str, int]) -> dict[str, int]:
    """The options as given, once the tokenizer has checked them (the agent fills in the defaults); else a 422
    naming the one at fault."""
    try:
        tokenizer_options(kind, options)
    except ConfigError as error:
        field = "tokenizer" if error.field == "tokenizer" else f"tokenizer_options.{error.field}"
        raise invalid(field, error.message) from None
    return options


async def visible_dataset(request: Request, dataset_id: str, field: str = "dataset_id") -> Dataset:
    """One of the caller's datasets, or 404 naming the field that referred to it."""
    async with gateway_of(request).sessions() as session:
        row = await queries.get_dataset(session, owner_of(request), dataset_id)
    if row is None:
        raise ApiError(404, "not_found", f"{field}: dataset {dataset_id!r} not found", field)
    return row


routes = [
    Route("/datasets", upload_dataset, methods=["POST"]),
    Route("/datasets", list_datasets, methods=["GET"]),
    Route("/datasets/{dataset_id}", get_dataset, methods=["GET"]),
    Route("/datasets/{dataset_id}", delete_dataset, methods=["DELETE"]),
    Route("/datasets/{dataset_id}/tokenize", tokenize_dataset, methods=["POST"]),
]
