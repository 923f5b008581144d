"""The generate agent: streams tokens of a trained model as TokensGenerated facts, then GenerationCompleted.

Every request for a model joins that model's batching engine (serving.py), which advances all of them together, a
token each per step, in its own thread; the event loop only hands tokens on. The first token is published at once,
the others in small batches: every 50 ms, or every 32 tokens. A request whose client went away (a
CancelRequested) leaves its slot at the next step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from functools import partial
from typing import Any

import faust

from agents.generate.metrics import serve_metrics
from agents.generate.serving import ModelCache
from agents.generate.stops import Stops
from agents.intake import command_agent, refuse_a_taken_job_id
from agents.runtime import Runtime
from events import (
    Completion,
    GenerateRequested,
    GenerationCompleted,
    GenerationFailed,
    JobAccepted,
    JobCancelled,
    Rejected,
    TokensGenerated,
)
from infra.db import queries
from infra.db.tables import Model
from infra.db.together import ReadTogether
from infra.publisher import JobLog
from infra.retry import UNAVAILABLE
from model.config import ConfigError
from model.engine import Engine
from model.generate import SamplingParams, Token

log = logging.getLogger(__name__)
# The first token goes out at once; later ones in batches, every FLUSH_S or FLUSH_TOKENS: under load a token a fact
# would spend the worker on Kafka writes, alone a client still sees text every few tens of milliseconds. A busy
# engine stretches the interval (see `flush_interval`): the facts of a step's worth of tokens cost the worker, Kafka,
# the projection and the gateway the same whatever their size, and there would be one per request every FLUSH_S.
FLUSH_S, FLUSH_TOKENS, FLUSH_MAX_S, FLUSH_SEQUENCES = 0.05, 32, 0.25, 8


def flush_interval(sequences: int) -> float:
    """How long a request's tokens wait to be published: FLUSH_S while the engine runs up to FLUSH_SEQUENCES
    sequences, longer in proportion beyond that (so that the worker publishes about as many facts a second at 64 as
    at 8), up to FLUSH_MAX_S."""
    return min(FLUSH_MAX_S, FLUSH_S * max(1.0, sequences / FLUSH_SEQUENCES))


def register(app: faust.App, runtime: Runtime) -> None:
    settings = runtime.settings
    cache = ModelCache(runtime.astore, settings.model_cache_size, settings.generate_slots, settings.generate_max_wait_s,
                       settings.generate_threads)
    if settings.worker_metrics_port:
        serve_metrics(cache, settings.worker_metrics_port)
    models = ReadTogether(partial(queries.servable_models, runtime.sessions))
    stops = Stops(runtime.settings, runtime.topics.job_control, runtime.signer, f"{runtime.producer_name}/stops")
    command_agent(app, runtime, runtime.topics.generate_requested, GenerateRequested, "generate",
                  lambda command: serve(runtime, cache, models, command, stops),
                  concurrency=runtime.settings.generate_concurrency)

    @app.task
    async def watch_for_stops() -> None:
        await runtime.ready.wait()
        await stops.run()


def sampling_params(command: GenerateRequested, max_new_tokens_limit: int, max_prompt_chars: int) -> SamplingParams:
    if command.max_tokens > max_new_tokens_limit:
        raise Rejected(f"max_tokens: at most {max_new_tokens_limit} new tokens per request", "max_tokens")
    if len(command.prompt) > max_prompt_chars:
        raise Rejected(f"prompt: at most {max_prompt_chars} characters", "prompt")
    try:
        return SamplingParams(max_new_tokens=command.max_tokens, temperature=command.temperature, top_k=command.top_k,
                              top_p=command.top_p, repetition_penalty=command.repetition_penalty,
                              stop=tuple(command.stop), seed=command.seed, num_sequences=command.num_sequences)
    except ConfigError as error:
        raise Rejected(f"{error.field}: {error.message}", error.field) from None


async def serve(runtime: Runtime, cache: ModelCache, models: ReadTogether[queries.ModelRef, Model],
                command: GenerateRequested, stops: Stops | None = None) -> None:
    await refuse_a_taken_job_id(runtime, command.request_id, "generate", command.owner, "request_id")
    job = JobLog(runtime.publisher, job_id=command.request_id, kind="generate", owner=command.owner)
    request = command.model_dump(mode="json")
    model_id = command.model_id
    try:
        settings = runtime.settings
        params = sampling_params(command, settings.max_new_tokens, settings.max_prompt_chars)
        model = await model_of(runtime, models, command)
        model_id = model.id
        await job.emit(JobAccepted, event_id=f"{command.request_id}-accepted", model_id=model.id,
                       model_name=model.name, request=request)
        served = await cache.get(queries.serving_checkpoint(model), queries.serving_version(model))
        stop = stops.watch(command.request_id, command.owner) if stops is not None else threading.Event()
        try:
            await _generate(job, served.engine, command, params, model.id, stop)
        finally:
            if stops is not None:
                stops.forget(command.request_id)
    except Rejected as error:
        if job.last_seq == 0:
            await job.emit(JobAccepted, event_id=f"{command.request_id}-accepted", model_id=model_id,
                           model_name=command.model_name, request=request)
        await job.emit(GenerationFailed, model_id=model_id, reason=error.reason, field=error.field)
    except UNAVAILABLE:
        raise  # the agent waits for the server and serves the request again
    except Exception as error:  # one bad request must not stop the agent
        log.exception("generation %s failed", command.request_id)
        if job.last_seq == 0:
            await job.emit(JobAccepted, event_id=f"{command.request_id}-accepted", model_id=model_id,
                           model_name=command.model_name, request=request)
        await job.emit(GenerationFailed, model_id=model_id, reason=f"internal error: {type(error).__name__}: {error}")


async def model_of(runtime: Runtime, models: ReadTogether[queries.ModelRef, Model], command: GenerateRequested
                   ) -> Model:
    """The model a request names, read together with the requests arriving at the same time (a burst of a hundred
    for one model costs one lookup); one not found waits a moment, in case it was recorded only just now."""
    try:
        return await models.read((command.owner, command.model_id, command.model_name))
    except Rejected:
        pass
    return await queries.servable_model_soon(runtime.sessions, command.owner, command.model_id, command.model_name)


async def _generate(job: JobLog, engine: Engine, command: GenerateRequested, params: SamplingParams,
                    model_id: str, stop: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    arrived: deque[Token | None] = deque()  # filled by the engine's thread
    wake = asyncio.Event()

    def deliver(token: Token | None) -> None:
        # Wake the event loop only when it has something to do at once: each wake-up costs the engine's thread the
        # GIL. A request's first token, a batch's worth, and the end; the rest wait for the loop's own tick.
        arrived.append(token)
        if token is None or (token.index == 0 and token.sequence == 0) or len(arrived) >= FLUSH_TOKENS:
            loop.call_soon_threadsafe(wake.set)

    start = time.perf_counter()
    stream = engine.submit(command.prompt, params, deliver)
    texts = [""] * params.num_sequences
    counts = [0] * params.num_sequences
    reasons: list[Any] = ["length"] * params.num_sequences
    first_token_at: float | None = None
    done = False
    while not done:
        try:
            await asyncio.wait_for(wake.wait(), flush_interval(len(engine.active)))
        except TimeoutError:
            pass  # time to publish what arrived, and to look for a stop
        wake.clear()
        if stop.is_set():  # its client went away: its slot goes at the engine's next step
            stream.cancel()
            break
        pending: list[Token] = []
        while arrived:
            item = arrived.popleft()
            if item is None:
                done = True
                break
            texts[item.sequence] += item.text
            counts[item.sequence] += 1
            if item.finish_reason:
                reasons[item.sequence] = item.finish_reason
            pending.append(item)
        if pending:
            first_token_at = first_token_at or time.perf_counter()
            if command.stream:
                await _publish_tokens(job, pending)
    if stop.is_set():
        await job.emit(JobCancelled, reason="cancelled by request (its client went away)")
        return
    if stream.refused is not None:
        raise Rejected(stream.refused)
    total_ms = (time.perf_counter() - start) * 1000
    completion_tokens = sum(counts)
    await job.emit(
        GenerationCompleted, model_id=model_id,
        completions=[Completion(index=i, text=texts[i], completion_tokens=counts[i], finish_reason=reasons[i])
                     for i in range(params.num_sequences)],
        prompt_tokens=len(stream.prompt_ids), completion_tokens=completion_tokens,
        ttft_ms=(first_token_at - start) * 1000 if first_token_at else None, total_ms=total_ms,
        tokens_per_s=completion_tokens / (total_ms / 1000) if total_ms > 0 else None,
        warnings=prompt_warnings(engine.tokenizer.unseen(command.prompt)),
    )


def prompt_warnings(unseen: str) -> list[str]:
    if not unseen:
        return []
    shown = ", ".join(repr(c) for c in unseen[:10]) + (", ..." if len(unseen) > 10 else "")
    return [f"the prompt holds {len(unseen)} character(s) the model never saw in training ({shown}); the model read "
            "each as <|unk|>"]


async def _publish_tokens(job: JobLog, pending: list[Token]) -> None:
    by_sequence: dict[int, list[Token]] = {}
    for token in pending:
        by_sequence.setdefault(token.sequence, []).append(token)
    for sequence, group in by_sequence.items():
        await job.emit(TokensGenerated, sequence=sequence, index=group[0].index, token_ids=[t.id for t in group],
                       text="".join(t.text for t in group))
