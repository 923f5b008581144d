"""Evaluation: `POST /api/v1/models/{id}/evaluate` starts a job; with `?wait=true` the answer is the report.

Held-out perplexity needs text the model did not train on (inline, or an uploaded dataset's id); the prompts give
the generation statistics. Waiting subscribes to the job on the live feed before the command is published.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from events import DatasetRef, EvaluateRequested, new_id
from gateway.bodies import EvaluateBody, WaitQuery
from gateway.context import gateway_of, owner_of
from gateway.datasets import visible_dataset
from gateway.errors import ApiError, invalid
from gateway.generation import usable_model
from gateway.inputs import json_body, model_ref, query
from gateway.jobs import check_quota_of_jobs, submit, submitted_response
from gateway.live import FeedEvent, SubscriptionLagged
from gateway.models import dataset_ref
from gateway.openapi import operation
from gateway.streams import job_events, log_reader
from gateway.views import ErrorDetail, EvaluationResult, Submitted
from infra.db import queries

FINAL = ("EvaluationCompleted", "EvaluationFailed", "JobCancelled")


def evaluation_result(job_id: str, model_id: str, final: FeedEvent) -> EvaluationResult:
    payload = final.payload()
    if final.type == "EvaluationCompleted":
        return EvaluationResult(job_id=job_id, model_id=model_id, status="completed", report=payload["report"])
    reason = payload.get("reason") or "the evaluation was cancelled"
    return EvaluationResult(job_id=job_id, model_id=model_id, status="failed",
                            error=ErrorDetail(code="evaluation_failed", message=reason, field=payload.get("field")))


@operation(summary="Evaluate a model", tag="models", body=EvaluateBody, query=WaitQuery,
           responses={200: EvaluationResult, 202: Submitted})
async def evaluate(request: Request) -> JSONResponse:
    """Held-out perplexity (give `held_out` text or `dataset_id`) and generation statistics over `prompts`.
    Answers 202 with the job; `?wait=true` waits for the report (up to the request timeout)."""
    gateway = gateway_of(request)
    wait = query(request, WaitQuery).wait
    body = await json_body(request, EvaluateBody, empty_ok=True)
    row = await usable_model(request, model_ref(request), "model")
    if not body.prompts and body.held_out is None and body.dataset_id is None:
        raise invalid("prompts", "give `prompts`, `held_out` text or a `dataset_id` to evaluate on")
    held_out = None
    if body.held_out is not None:
        held_out, _, _ = await dataset_ref(request, body.held_out, "held_out")
    elif body.dataset_id is not None:
        held_out = DatasetRef(key=(await visible_dataset(request, body.dataset_id, "dataset_id")).key)
    job_id = new_id()
    command = EvaluateRequested(
        job_id=job_id, model_id=row.id, model_name=row.name, held_out=held_out, prompts=body.prompts,
        max_new_tokens=body.max_new_tokens, seed=body.seed, owner=owner_of(request),
    )
    topic = gateway.topics.evaluate_requested
    if not wait:
        return submitted_response(await submit(request, topic, command, job_id, row.id))

    await check_quota_of_jobs(request)
    release = gateway.generations.acquire(owner_of(request))  # a caller waiting on a report holds a slot
    subscription = gateway.feed.open(job_id, queries.visible_to(owner_of(request)))
    try:
        await gateway.publisher.command(topic, job_id, command)
        final = await _final_event(job_events(job_id, 0, gateway.feed, log_reader(gateway.sessions, job_id),
                                              subscription=subscription,
                                              idle_poll_max_s=2.0), gateway.settings.request_timeout_s)
    finally:
        gateway.feed.close(subscription)
        release()
    if final is None:
        raise ApiError(504, "timeout", f"the evaluation did not finish within {gateway.settings.request_timeout_s:g}s;"
                                       f" follow it at /api/v1/jobs/{job_id}/events")
    owner = owner_of(request)

    async def recorded(session: Any) -> bool | None:  # read-your-writes: the report is in the model's detail too
        job = await queries.get_job(session, owner, job_id)
        return True if job is not None and job.status in ("completed", "failed", "cancelled") else None

    await queries.wait_for(gateway.sessions, recorded, gateway.settings.submit_wait_s)
    return JSONResponse(evaluation_result(job_id, row.id, final).json_dict())


async def _final_event(source: Any, timeout_s: float) -> FeedEvent | None:
    async def last() -> FeedEvent | None:
        async for event in source:
            if event.type in FINAL:
                return event
        return None

    try:
        return await asyncio.wait_for(last(), timeout_s)
    except (TimeoutError, SubscriptionLagged):
        return None
    finally:
        await source.aclose()


routes = [Route("/models/{model}/evaluate", evaluate, methods=["POST"])]
