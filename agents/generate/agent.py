"""The generate agent: streams tokens of a trained model as TokensGenerated facts, then GenerationCompleted.

Generation runs in a thread (PyTorch releases the GIL while it computes), so the event loop keeps serving other
requests and the agent's partitions. Tokens are published in small batches: every 20 ms, or every 16 tokens.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import faust

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
from infra.publisher import JobLog
from infra.retry import UNAVAILABLE
from model.config import ConfigError
from model.generate import Generator, SamplingParams, Token

log = logging.getLogger(__name__)
FLUSH_S, FLUSH_TOKENS = 0.02, 16


def register(app: faust.App, runtime: Runtime) -> None:
    cache = ModelCache(runtime.astore, runtime.settings.model_cache_size)
    stops = Stops(runtime.settings, runtime.topics.job_control, runtime.signer, f"{runtime.producer_name}/stops")
    command_agent(app, runtime, runtime.topics.generate_requested, GenerateRequested, "generate",
                  lambda command: serve(runtime, cache, command, stops),
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


async def serve(runtime: Runtime, cache: ModelCache, command: GenerateRequested, stops: Stops | None = None) -> None:
    await refuse_a_taken_job_id(runtime, command.request_id, "generate", command.owner, "request_id")
    job = JobLog(runtime.publisher, job_id=command.request_id, kind="generate", owner=command.owner)
    request = command.model_dump(mode="json")
    model_id = command.model_id
    try:
        settings = runtime.settings
        params = sampling_params(command, settings.max_new_tokens, settings.max_prompt_chars)
        model = await queries.servable_model_soon(runtime.sessions, command.owner, command.model_id,
                                                 command.model_name)
        model_id = model.id
        await job.emit(JobAccepted, event_id=f"{command.request_id}-accepted", model_id=model.id,
                       model_name=model.name, request=request)
        generator = await cache.get(queries.serving_checkpoint(model), queries.serving_version(model))
        stop = stops.watch(command.request_id, command.owner) if stops is not None else threading.Event()
        try:
            await _generate(job, generator, command, params, model.id, stop)
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


async def _generate(job: JobLog, generator: Generator, command: GenerateRequested, params: SamplingParams,
                    model_id: str, stop: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    tokens: asyncio.Queue[Token | BaseException | None] = asyncio.Queue()
    start = time.perf_counter()

    def produce() -> None:
        try:
            for token in generator.stream(command.prompt, params):
                if stop.is_set():  # its client went away: no more tokens for nobody
                    break
                loop.call_soon_threadsafe(tokens.put_nowait, token)
        except BaseException as error:  # handed to the event loop, which reports it
            loop.call_soon_threadsafe(tokens.put_nowait, error)
        finally:
            loop.call_soon_threadsafe(tokens.put_nowait, None)

    worker = loop.run_in_executor(None, produce)
    texts = [""] * params.num_sequences
    counts = [0] * params.num_sequences
    reasons: list[Any] = ["length"] * params.num_sequences
    pending: list[Token] = []
    first_token_at: float | None = None
    last_flush = time.perf_counter()
    while True:
        try:
            item = await asyncio.wait_for(tokens.get(), FLUSH_S) if pending else await tokens.get()
        except TimeoutError:
            item = ...  # time to flush what is pending
        if isinstance(item, BaseException):
            await worker
            raise item
        if isinstance(item, Token):
            first_token_at = first_token_at or time.perf_counter()
            texts[item.sequence] += item.text
            counts[item.sequence] += 1
            if item.finish_reason:
                reasons[item.sequence] = item.finish_reason
            pending.append(item)
        done = item is None
        if pending and (done or len(pending) >= FLUSH_TOKENS or time.perf_counter() - last_flush >= FLUSH_S):
            if command.stream:
                await _publish_tokens(job, pending)
            pending, last_flush = [], time.perf_counter()
        if done:
            break
    await worker
    if stop.is_set():
        await job.emit(JobCancelled, reason="cancelled by request (its client went away)")
        return
    total_ms = (time.perf_counter() - start) * 1000
    completion_tokens = sum(counts)
    await job.emit(
        GenerationCompleted, model_id=model_id,
        completions=[Completion(index=i, text=texts[i], completion_tokens=counts[i], finish_reason=reasons[i])
                     for i in range(params.num_sequences)],
        prompt_tokens=len(generator.tokenizer.encode(command.prompt)), completion_tokens=completion_tokens,
        ttft_ms=(first_token_at - start) * 1000 if first_token_at else None, total_ms=total_ms,
        tokens_per_s=completion_tokens / (total_ms / 1000) if total_ms > 0 else None,
        warnings=prompt_warnings(generator.tokenizer.unseen(command.prompt)),
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
