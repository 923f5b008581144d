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

from events import DatasetDeleted, DatasetUploaded, check_text, dataset_text, new_id
from gateway.bodies import DatasetBody, PageQuery
from gateway.context import gateway_of, owner_of
from gateway.errors import ApiError, invalid
from gateway.inputs import json_body, query, too_large
from gateway.openapi import operation
from gateway.quotas import check_datasets
from gateway.views import DatasetList, DatasetView, DeletedDataset
from infra.db import queries
from infra.db.tables import Dataset
from infra.objectstore import artifacts

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
    owner = owner_of(request)
    same = await check_room_for(request, data)
    if same is not None:
        return DatasetView.of(same).model_copy(update={"reused": True}), False
    dataset_id = new_id()
    key = artifacts.dataset_key(dataset_id)
    await gateway.store.put_bytes(key, data, "text/plain; charset=utf-8")
    fact = DatasetUploaded.of_text(dataset_id=dataset_id, name=name, key=key, data=data, text=text, owner=owner,
                                   producer=gateway.producer_id)
    await gateway.publisher.fact(fact)
    row = await queries.wait_for(
        gateway.sessions, lambda s: queries.get_dataset(s, owner, dataset_id), gateway.settings.submit_wait_s
    )
    if row is not None:
        return DatasetView.of(row), True
    return DatasetView(id=dataset_id, name=name, key=key, bytes=len(data), characters=len(text),
                       preview=fact.preview, sha256=fact.sha256, created_at=fact.time, status="stored"), True


async def check_room_for(request: Request, data: bytes) -> Dataset | None:
    """The caller's dataset of exactly these bytes when there is one; else 429 when one more would pass its quotas."""
    gateway = gateway_of(request)
    owner = owner_of(request)
    async with gateway.sessions() as session:
        same = await queries.dataset_with_digest(session, owner, hashlib.sha256(data).hexdigest())
        if same is None:
            await check_datasets(session, gateway.settings, owner, len(data))
    return same


@operation(summary="List datasets", tag="datasets", query=PageQuery, responses={200: DatasetList})
async def list_datasets(request: Request) -> JSONResponse:
    page = query(request, PageQuery)
    async with gateway_of(request).sessions() as session:
        rows, total = await queries.list_datasets(session, owner_of(request), page.limit, page.offset)
    listing = DatasetList(items=[DatasetView.of(r) for r in rows], total=total, limit=page.limit, offset=page.offset)
    return JSONResponse(listing.json_dict())


@operation(summary="Get a dataset", tag="datasets", responses={200: DatasetView})
async def get_dataset(request: Request) -> JSONResponse:
    row = await visible_dataset(request, request.path_params["dataset_id"])
    return JSONResponse(DatasetView.of(row).json_dict())


@operation(summary="Delete a dataset", tag="datasets", responses={200: DeletedDataset})
async def delete_dataset(request: Request) -> JSONResponse:
    """Removes the stored text and its listing. Models trained on it keep their checkpoints; continuing one of them
    then needs a dataset given."""
    gateway = gateway_of(request)
    owner = owner_of(request)
    row = await visible_dataset(request, request.path_params["dataset_id"])
    job_id = new_id()
    await gateway.publisher.fact(DatasetDeleted(job_id=job_id, seq=1, producer=gateway.producer_id, owner=owner,
                                                kind="delete", dataset_id=row.id))
    await gateway.store.delete(row.key)

    async def gone(session: Any) -> bool | None:
        return True if await queries.get_dataset(session, owner, row.id) is None else None

    await queries.wait_for(gateway.sessions, gone, gateway.settings.submit_wait_s)
    return JSONResponse(DeletedDataset(dataset_id=row.id, job_id=job_id).json_dict())


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
]
