"""A dataset file sent whole as the body of `PUT /api/v1/datasets/files/{name}` (`curl -T`), streamed: stored part
by part as it arrives (an object-store multipart upload), one part on its way to the store while the next arrives,
so the gateway holds two parts at most whatever the size. A broken connection leaves nothing behind; an upload that
must survive one is an upload session (gateway/uploads.py).
"""

from __future__ import annotations

import asyncio
import hashlib

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from events import new_id
from gateway.bodies import UploadQuery
from gateway.context import gateway_of
from gateway.datasets import check_room, publish_dataset
from gateway.errors import ApiError, invalid
from gateway.inputs import query
from gateway.openapi import operation
from gateway.uploads import preview_of
from gateway.views import DatasetView
from infra.corpus import CorpusError, check_part
from infra.objectstore import artifacts


@operation(summary="Upload a dataset file, streamed", tag="datasets", query=UploadQuery, responses={201: DatasetView})
async def put_file(request: Request) -> JSONResponse:
    """The file as the body, streamed (no multipart form, any size up to the limit): stored part by part as it
    arrives. A broken connection leaves nothing behind; for a resumable upload, use an upload session."""
    gateway = gateway_of(request)
    settings = gateway.settings
    params = query(request, UploadQuery)
    name = request.path_params["name"].strip()[:200]
    if not name or "\x00" in name:
        raise invalid("name", "give the dataset a name (no NUL character)")
    declared = request.headers.get("content-length")
    await check_room(request, int(declared) if declared and declared.isdigit() else 0)
    dataset_id = new_id()
    key = artifacts.dataset_key(dataset_id)
    part_bytes = settings.upload_part_bytes
    store_upload_id = await gateway.store.start_upload(key)
    digest, parts, size, number, preview = hashlib.sha256(), [], 0, 0, ""
    pending: asyncio.Task | None = None

    async def send(number: int, data: bytes) -> None:
        try:
            check_part(data, number, (number - 1) * part_bytes, params.format, params.compression)
        except CorpusError as error:
            raise ApiError(422, "invalid_content", str(error), "body") from None
        parts.append((number, await gateway.store.put_part(key, store_upload_id, number, data)))

    try:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            size += len(chunk)
            if size > settings.max_upload_bytes:
                raise invalid("body", f"the file is over the limit of {settings.max_upload_bytes:,} bytes")
            while len(buffer) >= part_bytes:
                data = bytes(buffer[:part_bytes])
                del buffer[:part_bytes]
                digest.update(data)
                number += 1
                if number == 1:
                    preview = preview_of(data, params.format, params.compression)
                if pending is not None:
                    await pending  # one part on its way to the store while the next arrives
                pending = asyncio.ensure_future(send(number, data))
        if pending is not None:
            await pending
        if size == 0:
            raise invalid("body", "the file is empty")
        if buffer:
            data = bytes(buffer)
            digest.update(data)
            number += 1
            if number == 1:
                preview = preview_of(data, params.format, params.compression)
            await send(number, data)
        same = await check_room(request, size, digest.hexdigest())
        if same is not None:
            await gateway.store.abort_upload(key, store_upload_id)
            return JSONResponse(DatasetView.of(same).model_copy(update={"reused": True}).json_dict())
        await gateway.store.finish_upload(key, store_upload_id, sorted(parts))
    except BaseException as error:
        if pending is not None and not pending.done():
            pending.cancel()
        await asyncio.shield(gateway.store.abort_upload(key, store_upload_id))
        if isinstance(error, ClientDisconnect):
            raise ApiError(400, "disconnected", "the connection closed before the file arrived whole") from None
        raise
    view = await publish_dataset(request, dataset_id, name, size=size, sha256=digest.hexdigest(), preview=preview,
                                 characters=None, fmt=params.format, compression=params.compression,
                                 text_column=params.text_column)
    return JSONResponse(view.json_dict(), status_code=201, headers={"Location": f"/api/v1/datasets/{view.id}"})


routes = [Route("/datasets/files/{name}", put_file, methods=["PUT"])]
