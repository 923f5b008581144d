"""Jobs: submitting commands, reading job state, cancelling, and following a job's events (SSE or JSON).

`submit` checks the caller's quota of jobs, publishes a command and waits for the agents' acceptance on the live
feed (no polling while the agents work), then for its row in the database (read-your-writes, a few reads at most),
so that the job can be read back at once; with no agent running it still answers, with status `submitted`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from events import QUEUED_KINDS, CancelRequested, Command, JobsPruned, new_id, utc_now
from gateway.bodies import EventsQuery, FeedQuery, JobsQuery, PruneBody
from gateway.context import Gateway, gateway_of, owner_of
from gateway.errors import ApiError, not_found
from gateway.inputs import json_body, last_event_id, query
from gateway.live import FeedEvent, SubscriptionLagged
from gateway.openapi import operation
from gateway.quotas import check_active_jobs
from gateway.sse import EventStreamResponse, ServerSentEvent
from gateway.streams import all_events, job_events, log_reader
from gateway.views import Cancelling, JobList, JobView, PruneResult, QueuePlace, Submitted
from infra.db import queries
from infra.db.tables import Job

FINISHED = ("completed", "failed", "cancelled")


async def submit(request: Request, topic: str, command: Command, job_id: str, model_id: str | None,
                 jobs: int = 1) -> Submitted:
    """Publish the command, and answer with its job once its first fact is here (or the wait is over). `jobs`: the
    jobs it starts, against the key's limit (a sweep's trials count each)."""
    gateway = gateway_of(request)
    owner = owner_of(request)
    await check_quota_of_jobs(request, jobs)
    async with gateway.feed.subscribe(job_id, queries.visible_to(owner)) as subscription:
        await gateway.publisher.command(topic, job_id, command)
        try:
            first = await subscription.get(timeout=gateway.settings.submit_wait_s)
        except SubscriptionLagged:
            first = None
    if first is None:
        return Submitted.of(job_id, model_id, None)
    # The fact is here; the record agent writes its row within moments.
    job = await queries.wait_for(gateway.sessions, lambda s: queries.get_job(s, owner, job_id),
                                 min(gateway.settings.submit_wait_s, 2.0), interval_s=0.1)
    return Submitted.of(job_id, model_id, job)


async def check_quota_of_jobs(request: Request, jobs: int = 1) -> None:
    """429 when `jobs` more would pass the caller's limit of jobs queued or running (LFZ_MAX_ACTIVE_JOBS_PER_KEY)."""
    gateway = gateway_of(request)
    async with gateway.sessions() as session:
        await check_active_jobs(session, gateway.settings, owner_of(request), jobs)


def submitted_response(submitted: Submitted, location: str | None = None) -> JSONResponse:
    headers = {"Location": location} if location else None
    return JSONResponse(submitted.json_dict(), status_code=202, headers=headers)


@operation(summary="List jobs", tag="jobs", query=JobsQuery, responses={200: JobList})
async def list_jobs(request: Request) -> JSONResponse:
    params = query(request, JobsQuery)
    async with gateway_of(request).sessions() as session:
        rows, total = await queries.list_jobs(
            session, owner_of(request), kinds=params.kinds, status=params.status, model_id=params.model_id,
            limit=params.limit, offset=params.offset,
        )
        items = [await job_view(request, session, row) for row in rows]
    listing = JobList(items=items, total=total, limit=params.limit, offset=params.offset)
    return JSONResponse(listing.json_dict())


async def job_view(request: Request, session: Any, row: Job) -> JobView:
    """The job, with its place in the queue while it waits for a worker."""
    view = JobView.of(row)
    if row.status == "accepted" and row.kind in QUEUED_KINDS:
        place = await queries.place_in_queue(session, gateway_of(request).settings.topic_prefix, row.id)
        if place is not None:
            view.queue = QueuePlace(ahead=place[0], running=place[1])
    return view


@operation(summary="Prune finished jobs", tag="jobs", body=PruneBody, responses={200: PruneResult})
async def prune_jobs(request: Request) -> JSONResponse:
    """Take finished jobs (by default generations) of the caller out of the listings, with their facts in the
    database's copy of the log; the Kafka topic keeps them. At most 1000 a call."""
    gateway = gateway_of(request)
    owner = owner_of(request)
    body = await json_body(request, PruneBody, empty_ok=True)
    before = utc_now() - timedelta(seconds=body.older_than_s)
    async with gateway.sessions() as session:
        ids = await queries.finished_jobs(session, owner, body.kind.split(","), before, limit=1000)
    if ids:
        await gateway.publisher.fact(JobsPruned(job_id=new_id(), seq=1, producer=gateway.producer_id, owner=owner,
                                                kind="delete", job_ids=ids))

        async def gone(session: Any) -> bool | None:
            return True if await queries.get_job(session, owner, ids[-1]) is None else None

        await queries.wait_for(gateway.sessions, gone, gateway.settings.submit_wait_s)
    return JSONResponse(PruneResult(pruned=len(ids)).json_dict())


@operation(summary="Get a job", tag="jobs", responses={200: JobView})
async def get_job(request: Request) -> JSONResponse:
    job_id = request.path_params["job_id"]
    async with gateway_of(request).sessions() as session:
        row = await queries.get_job(session, owner_of(request), job_id)
        if row is None:
            raise not_found("job", job_id)
        view = await job_view(request, session, row)
    return JSONResponse(view.json_dict())


@operation(summary="Cancel a job", tag="jobs", responses={202: Cancelling})
async def cancel_job(request: Request) -> JSONResponse:
    """Ask the agents to stop the job: a queued job never starts, a running one stops within seconds."""
    gateway = gateway_of(request)
    job_id = request.path_params["job_id"]
    owner = owner_of(request)
    async with gateway.sessions() as session:
        row = await queries.get_job(session, owner, job_id)
    if row is None:
        raise not_found("job", job_id)
    if row.status in FINISHED:
        raise ApiError(409, "conflict", f"job {job_id!r} has already finished ({row.status})")
    command = CancelRequested(job_id=job_id, owner=owner)
    await gateway.publisher.command(gateway.topics.job_control, job_id, command)
    return JSONResponse(Cancelling(job_id=job_id).json_dict(), status_code=202)


def sse_of(event: FeedEvent, gateway: Gateway, id_: str | int | None = None) -> bytes:
    gateway.metrics.relayed.inc()
    return event.wire(event.seq if id_ is None else id_)


def hold_stream(request: Request) -> Callable[[], None]:
    """Count a new event stream against the caller's limit (429 past it); returns its release, safe to call twice."""
    return gateway_of(request).streams.acquire(owner_of(request))


def event_stream(request: Request, source: AsyncIterator[ServerSentEvent | bytes],
                 on_close: Callable[[], None] | None = None) -> EventStreamResponse:
    """The response for a stream; `on_close` (usually a `hold_stream` release) runs however the stream ends."""
    return EventStreamResponse(source, keepalive_s=gateway_of(request).settings.sse_keepalive_s, on_close=on_close)


async def job_sse(gateway: Gateway, job_id: str, after: int, owner: str | None) -> AsyncIterator[bytes]:
    read = log_reader(gateway.sessions, job_id)
    try:
        async for event in job_events(job_id, after, gateway.feed, read, visible=queries.visible_to(owner),
                                      idle_poll_max_s=gateway.settings.sse_keepalive_s):
            yield sse_of(event, gateway)
    except SubscriptionLagged:
        return  # this client fell behind; EventSource reconnects with Last-Event-ID and catches up from the log


@operation(summary="Follow a job's events", tag="jobs", query=EventsQuery, responses={200: None}, streams=200,
           json_items=True,
           description=(
               "Server-sent events: `id` is the event's sequence number, `event` its type, `data` the event as "
               "JSON. The log is replayed first (after `Last-Event-ID` or `?last_event_id=`), then live events "
               "follow until the job's terminal event. `?format=json` answers with the log as a JSON list instead. "
               "Browsers' EventSource cannot send headers: pass `?api_key=` instead of the Authorization header."
           ))
async def job_events_route(request: Request) -> Response:
    gateway = gateway_of(request)
    job_id = request.path_params["job_id"]
    owner = owner_of(request)
    params = query(request, EventsQuery)
    after = last_event_id(request, params.last_event_id)
    async with gateway.sessions() as session:
        if not await queries.log_visible(session, owner, job_id):
            raise not_found("job", job_id)
        if params.format == "json":
            rows = await queries.read_log(session, job_id, after)
            return JSONResponse([e.payload() for e in _deduplicated([FeedEvent.from_row(r) for r in rows])])
    release = hold_stream(request)
    return event_stream(request, job_sse(gateway, job_id, after, owner), release)


def _deduplicated(events: list[FeedEvent]) -> list[FeedEvent]:
    seen: set[int] = set()
    return [e for e in events if not (e.seq in seen or seen.add(e.seq))]  # type: ignore[func-returns-value]


async def feed_sse(gateway: Gateway, owner: str | None) -> AsyncIterator[bytes]:
    try:
        async for event in all_events(gateway.feed, queries.visible_to(owner)):
            yield sse_of(event, gateway, id_=f"{event.job_id}:{event.seq}")
    except SubscriptionLagged:
        return


@operation(summary="Follow every job's events", tag="jobs", query=FeedQuery, responses={200: None}, streams=200,
           stream_only=True,
           description=(
               "Live server-sent events of every job the key may see (no replay), for dashboards. Each message's "
               "`id` is `<job_id>:<seq>`; `event` is the type and `data` the event as JSON."
           ))
async def all_events_route(request: Request) -> Response:
    query(request, FeedQuery)
    release = hold_stream(request)
    return event_stream(request, feed_sse(gateway_of(request), owner_of(request)), release)


routes = [
    Route("/jobs", list_jobs, methods=["GET"]),
    Route("/jobs/prune", prune_jobs, methods=["POST"]),
    Route("/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/jobs/{job_id}/events", job_events_route, methods=["GET"]),
    Route("/events", all_events_route, methods=["GET"]),
]
