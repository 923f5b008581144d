"""Export: `POST /api/v1/models/{id}/export` starts a job that writes a checkpoint as a Hugging Face transformers
directory or a GGUF file; `GET /api/v1/exports/{job_id}` lists the files once it has finished, and
`GET /api/v1/exports/{job_id}/files/{name}` downloads one. Only the owner of the job sees either.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from events import ExportRequested, new_id
from gateway.bodies import ExportBody
from gateway.context import gateway_of, owner_of
from gateway.errors import ApiError, not_found
from gateway.generation import usable_model
from gateway.inputs import json_body, model_ref
from gateway.jobs import submit, submitted_response
from gateway.openapi import operation
from gateway.views import API, ExportView, Submitted
from infra.db import queries
from infra.db.tables import Job
from infra.objectstore import ObjectNotFound
from infra.objectstore.artifacts import export_content_type


@operation(summary="Export a model", tag="models", body=ExportBody, responses={202: Submitted})
async def export(request: Request) -> JSONResponse:
    """Write the model's serving checkpoint (or the one saved at `step`) as `format` `hf` (a directory that
    transformers' AutoModelForCausalLM and AutoTokenizer load) or `gguf` (for llama.cpp). Answers 202 with the job;
    its files are listed at `/api/v1/exports/{job_id}` once it has finished."""
    body = await json_body(request, ExportBody, empty_ok=True)
    row = await usable_model(request, model_ref(request), "model")
    job_id = new_id()
    command = ExportRequested(job_id=job_id, model_id=row.id, model_name=row.name, format=body.format,
                              dtype=body.dtype, step=body.step, owner=owner_of(request))
    submitted = await submit(request, gateway_of(request).topics.export_requested, command, job_id, row.id)
    return submitted_response(submitted, location=f"{API}/exports/{job_id}")


async def _finished_export(request: Request) -> Job:
    job_id = request.path_params["job_id"]
    async with gateway_of(request).sessions() as session:
        row = await queries.get_job(session, owner_of(request), job_id)
    if row is None or row.kind != "export":
        raise not_found("export", job_id, "job_id")
    if row.status == "failed":
        raise ApiError(409, "export_failed", row.error or "the export failed", row.error_field)
    if row.status != "completed":
        raise ApiError(409, "not_finished", f"the export is {row.status}; follow it at {API}/jobs/{job_id}/events")
    return row


@operation(summary="An export's files", tag="models", responses={200: ExportView})
async def get_export(request: Request) -> JSONResponse:
    """The files a finished export wrote, with their sizes and download URLs."""
    return JSONResponse(ExportView.of(await _finished_export(request)).json_dict())


@operation(summary="Download an exported file", tag="models", responses={200: None}, binary=True,
           extra_responses={410: "The file is no longer in the object store."})
async def download(request: Request) -> Response:
    """One file of a finished export, as bytes."""
    row = await _finished_export(request)
    name = request.path_params["name"]
    entry = next((f for f in (row.result or {}).get("files", []) if f["name"] == name), None)
    if entry is None:
        raise not_found("file", name, "name")
    try:
        data = await gateway_of(request).store.get_bytes(entry["key"])
    except ObjectNotFound:
        raise ApiError(410, "gone", f"{name} is no longer in the object store") from None
    return Response(data, media_type=export_content_type(name),
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


routes = [
    Route("/models/{model}/export", export, methods=["POST"]),
    Route("/exports/{job_id}", get_export, methods=["GET"]),
    Route("/exports/{job_id}/files/{name}", download, methods=["GET"]),
]
