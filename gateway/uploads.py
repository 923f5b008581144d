"""Datasets of any size: upload sessions (create, send parts in any order, complete, abort; resumable). A session
never holds more than the part it is given in memory (a file sent whole, streamed: gateway/streamed_upload.py).

A session is an object-store multipart upload of the dataset's key, plus the session's own small records beside it
(`uploads/<id>/session.json`, and a receipt per part with its size and SHA-256), so that any gateway process can take
the next part, and an interrupted upload resumes from the receipts. Each part is checked as it arrives (a NUL byte,
invalid UTF-8, the wrong magic bytes: named by part and file offset); the whole file is read by its tokenization.
Completing joins the parts into `datasets/<id>` and announces the dataset with `DatasetUploaded`.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from events import new_id, utc_now
from events.datasets import PREVIEW_CHARS
from events.fields import Identifier
from gateway.bodies import UploadBody
from gateway.context import gateway_of, owner_of
from gateway.datasets import check_room, publish_dataset
from gateway.errors import ApiError, invalid
from gateway.inputs import json_body
from gateway.openapi import operation
from gateway.views import DatasetView, PartView, UploadView, View
from infra.corpus import CorpusError, check_part
from infra.objectstore import (
    MAX_PARTS,
    MIN_PART_BYTES,
    ObjectNotFound,
    UploadNotFound,
    artifacts,
)

Format = Literal["text", "jsonl", "parquet"]
Compression = Literal["none", "gzip"]


class UploadSession(BaseModel):
    """What the gateway keeps about an upload session, in the object store beside its parts."""

    id: Identifier
    owner: str | None
    name: str
    format: Format
    compression: Compression
    text_column: str
    size: int
    part_bytes: int
    dataset_id: Identifier
    store_upload_id: str
    created_at: datetime

    @property
    def key(self) -> str:
        return artifacts.dataset_key(self.dataset_id)

    @property
    def parts(self) -> int:
        return max(1, -(-self.size // self.part_bytes))

    def part_size(self, number: int) -> int:
        """The size part `number` must have: every part is `part_bytes` but the last, which holds the rest."""
        return self.part_bytes if number < self.parts else self.size - (self.parts - 1) * self.part_bytes


class Receipt(BaseModel):
    number: int
    bytes: int
    sha256: str
    etag: str
    preview: str = ""


def preview_of(data: bytes, fmt: str, compression: str) -> str:
    """The first characters of the file's text, from its first part (best effort: a preview, not a check)."""
    head = data[:64 * 1024]
    if compression == "gzip":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 4 * PREVIEW_CHARS)
        except zlib.error:
            return ""
    if fmt == "parquet":
        return ""
    return head.decode("utf-8", errors="ignore")[:PREVIEW_CHARS]


async def _session(request: Request) -> UploadSession:
    """The caller's session named in the path, or 404 (another owner's looks the same as none)."""
    gateway = gateway_of(request)
    upload_id = request.path_params["upload_id"]
    try:
        data = await gateway.store.get_bytes(artifacts.upload_session_key(upload_id))
    except (ObjectNotFound, ValueError):
        data = None
    session = UploadSession.model_validate_json(data) if data is not None else None
    if session is None or session.owner != owner_of(request):
        raise ApiError(404, "not_found", f"upload_id: no upload session {upload_id!r}", "upload_id")
    return session


async def _receipts(request: Request, session: UploadSession) -> dict[int, Receipt]:
    store = gateway_of(request).store
    keys = await store.list(artifacts.upload_receipts_prefix(session.id))
    receipts = await asyncio.gather(*(store.get_bytes(key) for key in keys))
    found = (Receipt.model_validate_json(data) for data in receipts)
    return {receipt.number: receipt for receipt in found}


def _view(session: UploadSession, receipts: dict[int, Receipt]) -> UploadView:
    received = [PartView(number=r.number, bytes=r.bytes, sha256=r.sha256) for r in sorted(receipts.values(),
                                                                                            key=lambda r: r.number)]
    missing = [n for n in range(1, session.parts + 1) if n not in receipts]
    return UploadView(upload_id=session.id, name=session.name, format=session.format,
                      compression=session.compression, text_column=session.text_column, size=session.size,
                      part_bytes=session.part_bytes, parts=session.parts, received=received,
                      bytes_received=sum(r.bytes for r in received), missing=missing[:1000],
                      missing_count=len(missing), dataset_id=session.dataset_id,
                      parts_url=f"/api/v1/datasets/uploads/{session.id}/parts/{{number}}")


@operation(summary="Start an upload session", tag="datasets", body=UploadBody, responses={201: UploadView})
async def create_upload(request: Request) -> JSONResponse:
    """Start a resumable upload of a dataset of `size` bytes: send its parts (`part_bytes` each, the last holding
    the rest) to `PUT .../parts/{number}` in any order, then `POST .../complete`."""
    gateway = gateway_of(request)
    settings = gateway.settings
    body = await json_body(request, UploadBody)
    if body.size > settings.max_upload_bytes:
        raise invalid("size", f"{body.size:,} bytes is over the limit of {settings.max_upload_bytes:,} "
                              "(LFZ_MAX_UPLOAD_BYTES)")
    part_bytes = max(body.part_bytes or settings.upload_part_bytes, -(-body.size // MAX_PARTS))
    if body.size > part_bytes and part_bytes < min(MIN_PART_BYTES, settings.upload_part_bytes):
        raise invalid("part_bytes", f"parts of a file of several parts hold at least {MIN_PART_BYTES:,} bytes")
    await check_room(request, body.size)
    upload_id, dataset_id = new_id(), new_id()
    key = artifacts.dataset_key(dataset_id)
    store_upload_id = await gateway.store.start_upload(key)
    session = UploadSession(id=upload_id, owner=owner_of(request), name=body.name, format=body.format,
                            compression=body.compression, text_column=body.text_column, size=body.size,
                            part_bytes=part_bytes, dataset_id=dataset_id, store_upload_id=store_upload_id,
                            created_at=utc_now())
    await gateway.store.put_bytes(artifacts.upload_session_key(upload_id), session.model_dump_json().encode(),
                                  "application/json")
    return JSONResponse(_view(session, {}).json_dict(), status_code=201,
                        headers={"Location": f"/api/v1/datasets/uploads/{upload_id}"})


@operation(summary="Get an upload session", tag="datasets", responses={200: UploadView})
async def get_upload(request: Request) -> JSONResponse:
    """The parts received so far (with their SHA-256) and the ones still missing: what a resumed upload sends."""
    session = await _session(request)
    return JSONResponse(_view(session, await _receipts(request, session)).json_dict())


async def _read_part(request: Request, limit: int) -> bytes:
    data = bytearray()
    try:
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise invalid("body", f"the part holds more than {limit:,} bytes")
    except ClientDisconnect:
        raise ApiError(400, "disconnected", "the connection closed before the part arrived whole") from None
    return bytes(data)


@operation(summary="Send one part of an upload", tag="datasets", responses={200: PartView})
async def put_part(request: Request) -> JSONResponse:
    """The part's bytes as the body (`application/octet-stream`). Sending a part again replaces it; the answer's
    SHA-256 lets a client check what arrived."""
    gateway = gateway_of(request)
    session = await _session(request)
    try:
        number = int(request.path_params["number"])
    except ValueError:
        raise invalid("number", "a part number is an integer") from None
    if not 1 <= number <= session.parts:
        raise invalid("number", f"this upload has parts 1 to {session.parts}, not {number}")
    expected = session.part_size(number)
    data = await _read_part(request, expected)
    if len(data) != expected:
        raise invalid("body", f"part {number} must hold {expected:,} bytes, it holds {len(data):,}")
    try:
        check_part(data, number, (number - 1) * session.part_bytes, session.format, session.compression)
    except CorpusError as error:
        raise ApiError(422, "invalid_content", str(error), "body") from None
    try:
        etag = await gateway.store.put_part(session.key, session.store_upload_id, number, data)
    except UploadNotFound:
        raise ApiError(404, "not_found", f"upload_id: the upload {session.id!r} was completed or aborted",
                       "upload_id") from None
    receipt = Receipt(number=number, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), etag=etag,
                      preview=preview_of(data, session.format, session.compression) if number == 1 else "")
    await gateway.store.put_bytes(artifacts.upload_receipt_key(session.id, number), receipt.model_dump_json().encode(),
                                  "application/json")
    return JSONResponse(PartView(number=number, bytes=len(data), sha256=receipt.sha256).json_dict())


@operation(summary="Complete an upload", tag="datasets", responses={201: DatasetView},
           extra_responses={409: "Parts are missing."})
async def complete_upload(request: Request) -> JSONResponse:
    """Join the parts into the dataset and list it. 409 names the parts still missing."""
    gateway = gateway_of(request)
    session = await _session(request)
    receipts = await _receipts(request, session)
    missing = [n for n in range(1, session.parts + 1) if n not in receipts]
    if missing:
        shown = ", ".join(str(n) for n in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise ApiError(409, "parts_missing", f"parts missing: {shown} ({len(missing)} of {session.parts})", "parts")
    ordered = [receipts[n] for n in range(1, session.parts + 1)]
    digest = "parts:" + hashlib.sha256("".join(r.sha256 for r in ordered).encode()).hexdigest()
    same = await check_room(request, session.size, digest)
    if same is not None:
        await _discard(request, session)
        return JSONResponse(DatasetView.of(same).model_copy(update={"reused": True}).json_dict())
    try:
        await gateway.store.finish_upload(session.key, session.store_upload_id, [(r.number, r.etag) for r in ordered])
    except (UploadNotFound, ValueError) as error:
        raise ApiError(409, "parts_missing", f"the store could not join the parts ({error}); send them again",
                       "parts") from None
    if session.format == "parquet" and session.compression == "none":
        tail = await gateway.store.get_range(session.key, max(0, session.size - 4), 4)
        if tail != b"PAR1":
            await gateway.store.delete(session.key)
            await _discard(request, session)
            raise ApiError(422, "invalid_content", "file: the file does not end as a Parquet file does (PAR1)",
                           "file")
    view = await publish_dataset(request, session.dataset_id, session.name, size=session.size, sha256=digest,
                                 preview=ordered[0].preview, characters=None, fmt=session.format,
                                 compression=session.compression, text_column=session.text_column)
    await _forget(request, session)
    return JSONResponse(view.json_dict(), status_code=201, headers={"Location": f"/api/v1/datasets/{view.id}"})


async def _forget(request: Request, session: UploadSession) -> None:
    await gateway_of(request).store.delete_prefix(artifacts.upload_prefix(session.id))


async def _discard(request: Request, session: UploadSession) -> None:
    try:
        await gateway_of(request).store.abort_upload(session.key, session.store_upload_id)
    finally:
        await _forget(request, session)


class Aborted(View):
    upload_id: str
    status: Literal["aborted"] = "aborted"


@operation(summary="Abort an upload", tag="datasets", responses={200: Aborted})
async def abort_upload(request: Request) -> JSONResponse:
    """Discard the parts received and the session."""
    session = await _session(request)
    await _discard(request, session)
    return JSONResponse(Aborted(upload_id=session.id).json_dict())


routes = [
    Route("/datasets/uploads", create_upload, methods=["POST"]),
    Route("/datasets/uploads/{upload_id}", get_upload, methods=["GET"]),
    Route("/datasets/uploads/{upload_id}", abort_upload, methods=["DELETE"]),
    Route("/datasets/uploads/{upload_id}/parts/{number}", put_part, methods=["PUT"]),
    Route("/datasets/uploads/{upload_id}/complete", complete_upload, methods=["POST"]),
]
