"""Text generation: `POST /api/v1/models/{id}/generate`, and the request-in-flight that the OpenAI routes share.

A `GenerationCall` subscribes to its request id on the live feed before it publishes `GenerateRequested`, so no
token can slip past. It then either relays the events as they come (streaming) or waits for the final one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from events import CancelRequested, GenerateRequested, Sampling
from gateway.bodies import GenerateBody, sampling_of
from gateway.context import Gateway, gateway_of, owner_of
from gateway.errors import ApiError, from_validation_error, invalid
from gateway.inputs import json_body, model_ref
from gateway.jobs import event_stream, hold_stream, sse_of
from gateway.live import FeedEvent, Subscription, SubscriptionLagged
from gateway.openapi import operation
from gateway.sse import EventStreamResponse, ServerSentEvent
from gateway.streams import job_events, log_reader
from gateway.views import CompletionView, GenerationResult
from infra.db import queries
from infra.db.tables import Model

log = logging.getLogger(__name__)
FINAL = ("GenerationCompleted", "GenerationFailed", "JobCancelled")


async def usable_model(request: Request, id_or_name: str, field: str) -> Model:
    """A model the caller may generate with or evaluate, by id or by name: 404 when unknown (or not theirs), 409 when
    it has no checkpoint yet. Any checkpoint serves (see ServingCheckpoint): a cancelled or failed run's too."""
    row = await gateway_of(request).models.read((owner_of(request), id_or_name))
    if row is None:
        raise ApiError(404, "not_found", f"there is no model with the id or name {id_or_name!r}", field)
    if not (row.best_checkpoint or row.latest_checkpoint):
        step = f", step {row.step} of {row.max_iters}" if row.max_iters else ""
        raise ApiError(409, "no_checkpoint", f"model {id_or_name!r} has no checkpoint yet ({row.status}{step}); it "
                                             "can generate from its first one")
    return row


def generate_command(request: Request, row: Model, prompt: str, max_tokens: int, sampling: Sampling, *,
                     stream: bool, max_tokens_field: str = "max_tokens") -> GenerateRequested:
    """The command, after the limits from the settings: 422 naming `prompt` or `max_tokens` past them."""
    settings = gateway_of(request).settings
    if len(prompt) > settings.max_prompt_chars:
        raise invalid("prompt", f"longer than the limit of {settings.max_prompt_chars} characters")
    limit = min(settings.max_new_tokens, 8192)
    if max_tokens > limit:
        raise invalid(max_tokens_field, f"must be at most {limit}")
    try:
        return GenerateRequested(model_id=row.id, model_name=row.name, prompt=prompt, max_tokens=max_tokens,
                                 owner=owner_of(request), stream=stream, **sampling.model_dump())
    except ValidationError as exc:
        raise from_validation_error(exc) from None


_STOPPING: set[asyncio.Task[None]] = set()  # cancels on their way to the agents, kept from the garbage collector


class GenerationCall:
    """One GenerateRequested in flight, counted against the caller's generations. `start` subscribes, then
    publishes; `close` unsubscribes and, when the generation has not ended (its client went away), asks the agents
    to stop it: a CancelRequested with its request id, which the worker generating it sees within a second."""

    def __init__(self, gateway: Gateway, command: GenerateRequested):
        self.gateway = gateway
        self.command = command
        self.request_id = command.request_id
        self.subscription: Subscription | None = None
        self.timeout_s = gateway.settings.request_timeout_s
        self.ended = False
        self._release: Any = None

    async def start(self) -> None:
        self._release = self.gateway.generations.acquire(self.command.owner)
        self.subscription = self.gateway.feed.open(self.request_id, queries.visible_to(self.command.owner))
        try:
            topic = self.gateway.topics.generate_requested
            await self.gateway.publisher.command(topic, self.request_id, self.command)
        except BaseException:
            self.ended = True  # not sent: nothing to stop
            self.close()
            raise

    def close(self) -> None:
        if self.subscription is not None:
            self.gateway.feed.close(self.subscription)
            self.subscription = None
        if self._release is not None:
            self._release()
            self._release = None
            if not self.ended:
                task = asyncio.ensure_future(self._stop())
                _STOPPING.add(task)
                task.add_done_callback(_STOPPING.discard)

    async def _stop(self) -> None:
        cancel = CancelRequested(job_id=self.request_id, reason="the client went away", owner=self.command.owner)
        try:
            await self.gateway.publisher.command(self.gateway.topics.job_control, self.request_id, cancel)
        except Exception as exc:  # the generation then runs to its end: wasted work, nothing worse
            log.warning("could not ask the agents to stop generation %s: %s", self.request_id, exc)

    async def events(self) -> AsyncIterator[FeedEvent]:
        """Every event of the request in order, ending with the final one; raises TimeoutError when the agents
        stay silent for `request_timeout_s`."""
        assert self.subscription is not None
        source = job_events(self.request_id, 0, self.gateway.feed, log_reader(self.gateway.sessions, self.request_id),
                            subscription=self.subscription, replay=False, idle_poll_max_s=2.0)
        try:
            while True:
                try:
                    event = await _next_within(source, self.timeout_s)
                except StopAsyncIteration:
                    self.ended = True
                    return
                if event.type in FINAL:
                    self.ended = True
                yield event
        finally:
            await source.aclose()

    async def run(self, request: Request | None = None) -> dict[str, Any]:
        """Start, wait for the final event (see `result`), close. With `request`, a client that disconnects
        meanwhile ends the wait (and, through `close`, the generation)."""
        await self.start()
        try:
            if request is None:
                return await self.result()
            result, gone = asyncio.ensure_future(self.result()), asyncio.ensure_future(_disconnected(request))
            try:
                await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (result, gone):
                    if not task.done():
                        task.cancel()
            if result.done() and not result.cancelled():
                return result.result()
            raise ApiError(499, "client_closed", "the client went away before the generation ended")
        finally:
            self.close()

    async def result(self) -> dict[str, Any]:
        """The final event as a dict; ApiError for a failure (422 naming the field when it had one) or a timeout."""
        final: FeedEvent | None = None
        try:
            async for event in self.events():
                if event.type in FINAL:
                    final = event
        except (TimeoutError, SubscriptionLagged):
            final = None
        if final is None:
            raise ApiError(504, "timeout", f"no agent answered within {self.timeout_s:g}s; is a worker running?")
        payload = final.payload()
        if final.type == "JobCancelled":
            raise ApiError(409, "cancelled", f"the generation was cancelled: {payload.get('reason')}")
        if final.type == "GenerationFailed":
            field = payload.get("field")
            if field:
                raise ApiError(422, "invalid", payload.get("reason") or "generation failed", field)
            raise ApiError(502, "generation_failed", payload.get("reason") or "generation failed")
        return payload


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body was read before: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _next_within(source: AsyncIterator[FeedEvent], timeout_s: float) -> FeedEvent:
    return await asyncio.wait_for(anext(source), timeout_s)


def generation_result(payload: dict[str, Any], request_id: str) -> GenerationResult:
    completions = [CompletionView(**c) for c in payload.get("completions", [])]
    texts = [c.text for c in completions]
    prompt_tokens, completion_tokens = payload.get("prompt_tokens", 0), payload.get("completion_tokens", 0)
    return GenerationResult(
        request_id=request_id, model_id=payload.get("model_id", ""), text=texts[0] if texts else "", texts=texts,
        completions=completions, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens, ttft_ms=payload.get("ttft_ms"),
        total_ms=payload.get("total_ms", 0.0), tokens_per_s=payload.get("tokens_per_s"),
        warnings=payload.get("warnings", []),
    )


async def start_stream(request: Request, call: GenerationCall,
                       source: AsyncIterator[ServerSentEvent | bytes]) -> EventStreamResponse:
    """Start a generation whose answer is an event stream: counted against the caller's open streams first (a 429
    must not leave a generation running), and closed however the stream ends."""
    release = hold_stream(request)
    try:
        await call.start()
    except BaseException:
        release()
        raise

    def close() -> None:
        call.close()
        release()

    return event_stream(request, source, close)


async def native_sse(call: GenerationCall) -> AsyncIterator[ServerSentEvent]:
    started = time.monotonic()
    try:
        async for event in call.events():
            yield sse_of(event, call.gateway)
    except TimeoutError:
        waited = time.monotonic() - started
        yield ServerSentEvent(event="error", data={"error": {
            "code": "timeout", "message": f"no agent answered within {waited:.0f}s; is a worker running?"}})
    except SubscriptionLagged:
        return


@operation(summary="Generate text", tag="generation", body=GenerateBody, responses={200: GenerationResult},
           streams=200)
async def generate(request: Request) -> Response:
    """`max_tokens` (or `max_length`) counts new tokens only; `temperature` 0 is greedy. With `"stream": true`
    the answer is server-sent events: TokensGenerated as tokens are produced, then GenerationCompleted."""
    gateway = gateway_of(request)
    body = await json_body(request, GenerateBody)
    row = await usable_model(request, model_ref(request), "model")
    command = generate_command(request, row, body.prompt, body.max_tokens,
                               sampling_of(body, body.stop, body.num_sequences), stream=body.stream,
                               max_tokens_field=body._max_tokens_as)
    call = GenerationCall(gateway, command)
    if body.stream:
        return await start_stream(request, call, native_sse(call))
    payload = await call.run(request)
    return JSONResponse(generation_result(payload, command.request_id).json_dict())


routes = [Route("/models/{model}/generate", generate, methods=["POST"])]
