"""Import: `POST /api/v1/models/import` takes a Hugging Face transformers model directory as a multipart upload
(`files`, repeated: config.json, model.safetensors, tokenizer.json, ...; and the new model's `name`), stores the
files and starts the import job, which registers the model once its checkpoint is written.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from events import ImportRequested, new_id
from events.commands import FILE_NAME
from events.commands import IMPORT_FILES as REQUIRED
from gateway.context import gateway_of, owner_of
from gateway.errors import ApiError, from_validation_error, invalid
from gateway.inputs import too_large
from gateway.jobs import submit, submitted_response
from gateway.openapi import operation
from gateway.views import API, Submitted
from infra.db import queries
from infra.objectstore.artifacts import import_key

MAX_FILES = 16
MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["name", "files"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200, "description": "The new model's name."},
        "description": {"type": "string", "maxLength": 2000},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "The directory's files, each under its own name: " + ", ".join(REQUIRED) + "."},
    },
}


@operation(summary="Import a model", tag="models", responses={202: Submitted}, multipart=MULTIPART_SCHEMA,
           extra_responses={409: "A model of this name exists already.",
                            415: "The body is not multipart/form-data."})
async def import_model(request: Request) -> JSONResponse:
    """Register a transformers model directory (GPT2LMHeadModel or GPTNeoXForCausalLM with one of our tokenizers,
    e.g. one exported here) as a new model that generates, evaluates and trains further. Answers 202 with the job;
    the model is `completed` once its checkpoint is written."""
    gateway = gateway_of(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type", "send the files as multipart/form-data (`files`, repeated)")
    form = await request.form(max_files=MAX_FILES, max_fields=8, max_part_size=64 * 1024)
    name = form.get("name")
    description = form.get("description") or ""
    if not isinstance(name, str) or not name.strip():
        raise invalid("name", "give the new model's name")
    uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    names = [f.filename or "" for f in uploads]
    bad = next((n for n in names if not FILE_NAME.match(n)), None)
    if bad is not None:
        raise invalid("files", f"{bad!r} is not a plain file name (letters, digits, '.', '_', '-')")
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise invalid("files", f"{', '.join(missing)} missing; a model directory needs {', '.join(REQUIRED)}")
    if len(set(names)) != len(names):
        raise invalid("files", "each file name once")
    job_id = new_id()
    try:
        command = ImportRequested(job_id=job_id, model_name=name.strip(), description=description,
                                  files={n: import_key(job_id, n) for n in names}, owner=owner_of(request))
    except ValidationError as error:
        raise from_validation_error(error) from None
    async with gateway.sessions() as session:
        if await queries.model_named(session, owner_of(request), command.model_name) is not None:
            raise ApiError(409, "name_taken", f"name: a model named {command.model_name!r} exists already", "name")
    total = 0
    for upload in uploads:
        data = await upload.read()
        total += len(data)
        if total > gateway.settings.max_import_bytes:
            raise too_large(gateway.settings.max_import_bytes)
        await gateway.store.put_bytes(import_key(job_id, upload.filename or ""), data)
    submitted = await submit(request, gateway.topics.import_requested, command, job_id, None)
    return submitted_response(submitted, location=f"{API}/jobs/{job_id}")


routes = [Route("/models/import", import_model, methods=["POST"])]
