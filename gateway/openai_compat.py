"""The OpenAI-compatible surface under `/v1`: list models, completions and chat completions, streamed or not.

The official `openai` client pointed at `http://host:port/v1` works unchanged. A model is named by its name (as
`GET /v1/models` lists it) or its id. Chat messages become one plain prompt: `role: content` lines, then
`assistant:`. OpenAI's field names and limits hold; a field this server does not implement is refused with a 400
naming it unless it asks for the default, and errors come in OpenAI's shape (gateway/errors.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from events import Sampling
from gateway.bodies import sampling_of
from gateway.context import gateway_of, owner_of
from gateway.errors import ApiError, invalid
from gateway.generation import GenerationCall, generate_command, start_stream, usable_model
from gateway.inputs import json_body
from gateway.live import SubscriptionLagged
from gateway.openapi import operation
from gateway.sse import ServerSentEvent
from infra.db import queries
from infra.db.tables import Model

DONE = ServerSentEvent(data="[DONE]")


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(Lenient):
    include_usage: bool = False


# OpenAI's fields this server does not implement. Each is accepted while it asks for what the server does anyway
# (its default), and refused with a 400 naming it otherwise: a client never gets a silent default instead of what it
# asked for. `user`, `store`, `metadata` and `service_tier` change nothing in the answer, and are accepted as they are.
NOT_IMPLEMENTED: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False), "suffix": (None, ""),
    "frequency_penalty": (None, 0), "presence_penalty": (None, 0), "logit_bias": (None, {}), "best_of": (None, 1),
    "response_format": (None, {"type": "text"}), "tools": (None, []), "tool_choice": (None, "none"),
    "functions": (None, []), "function_call": (None, "none"), "parallel_tool_calls": (None, False),
}
HARMLESS = ("user", "store", "metadata", "service_tier")


class OpenAISampling(Sampling):
    """OpenAI's names and limits where they differ from GenerateRequested's: `n`, a `stop` that may be one string (at
    most 4), a temperature from 0 to 2 that defaults to 1."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=170, description=(
        "A model's name (its newest version), `name@alias`, `name/version`, or a version's id."))
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    n: int = Field(default=1, ge=1, le=8)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(default=None, max_length=4)  # type: ignore[assignment]
    max_tokens: int | None = Field(default=None, ge=1)
    num_sequences: SkipJsonSchema[int] = 1  # OpenAI says `n` (check_openai_fields refuses this name)


def check_openai_fields(body: dict[str, Any]) -> None:
    """400 naming a field of OpenAI's that this server does not implement, set to something it would not do; the
    harmless ones are dropped before the body is validated (which then refuses any other unknown field)."""
    for name in HARMLESS:
        body.pop(name, None)
    if "num_sequences" in body:
        raise ApiError(400, "unknown_field", "num_sequences: OpenAI's name for it is `n`", "num_sequences")
    for name, defaults in NOT_IMPLEMENTED.items():
        if name in body:
            if body[name] in defaults:
                del body[name]
            else:
                raise ApiError(400, "unsupported_parameter", f"{name}: not supported by this server (only "
                                                             f"{', '.join(map(json.dumps, defaults))})", name)


class CompletionRequest(OpenAISampling):
    prompt: str | list[str] = ""


class ChatMessage(Lenient):
    role: str = Field(min_length=1, max_length=32)
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if isinstance(part, dict))
        return self.content or ""


class ChatRequest(OpenAISampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: str | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


def chat_prompt(messages: list[ChatMessage]) -> str:
    """`role: content` lines, then `assistant:` for the model to continue."""
    return "\n".join(f"{m.role}: {m.text()}" for m in messages) + "\nassistant:"


def usage_of(payload: dict[str, Any]) -> Usage:
    prompt, completion = payload.get("prompt_tokens", 0), payload.get("completion_tokens", 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def chunk(kind: str, ident: str, created: int, model: str, choices: list[dict[str, Any]],
          usage: Usage | None = None) -> ServerSentEvent:
    body: dict[str, Any] = {"id": ident, "object": kind, "created": created, "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage.model_dump()
    return ServerSentEvent(data=json.dumps(body, separators=(",", ":")))


def stream_chunks(chat: bool, call: GenerationCall, model: str, n: int,
                  include_usage: bool) -> AsyncIterator[ServerSentEvent]:
    """OpenAI's streaming format: `data: {chunk}` per piece of text, a chunk with each finish_reason, `[DONE]`."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    ident = ("chatcmpl-" if chat else "cmpl-") + call.request_id
    created = int(time.time())

    def piece(index: int, text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if not chat:
            return {"text": text or "", "index": index, "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

    async def chunks() -> AsyncIterator[ServerSentEvent]:
        if chat:
            yield chunk(kind, ident, created, model, [piece(i, "", None, first=True) for i in range(n)])
        try:
            async for event in call.events():
                payload = event.payload()
                if event.type == "TokensGenerated" and payload.get("text"):
                    yield chunk(kind, ident, created, model, [piece(payload.get("sequence", 0), payload["text"], None)])
                elif event.type == "GenerationCompleted":
                    finals = [piece(c["index"], None if chat else "", c["finish_reason"])
                              for c in payload.get("completions", [])]
                    yield chunk(kind, ident, created, model, finals)
                    if include_usage:
                        yield chunk(kind, ident, created, model, [], usage_of(payload))
                elif event.type == "GenerationFailed":
                    yield ServerSentEvent(data={"error": {"message": payload.get("reason", "generation failed"),
                                                          "type": "generation_failed", "code": "generation_failed",
                                                          "param": payload.get("field")}})
        except (TimeoutError, SubscriptionLagged):
            yield ServerSentEvent(data={"error": {"message": "no agent answered in time; is a worker running?",
                                                  "type": "timeout", "code": "timeout", "param": None}})
        yield DONE

    return chunks()


async def _run(request: Request, chat: bool) -> Response:
    body: CompletionRequest | ChatRequest
    if chat:
        body = await json_body(request, ChatRequest, check=check_openai_fields)
        prompt = chat_prompt(body.messages)
        max_tokens = body.max_completion_tokens or body.max_tokens or 64
    else:
        body = await json_body(request, CompletionRequest, check=check_openai_fields)
        if isinstance(body.prompt, list) and len(body.prompt) > 1:
            raise invalid("prompt", "one prompt per request (use `n` for several completions)")
        prompt = body.prompt[0] if isinstance(body.prompt, list) and body.prompt else body.prompt or ""
        max_tokens = body.max_tokens or 16
    row: Model = await usable_model(request, body.model, "model")
    command = generate_command(request, row, str(prompt), max_tokens, sampling_of(body, body.stop, body.n),
                               stream=body.stream)
    call = GenerationCall(gateway_of(request), command)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await start_stream(request, call, stream_chunks(chat, call, body.model, body.n, include_usage))
    payload = await call.run(request)
    created, usage = int(time.time()), usage_of(payload)
    completions = payload.get("completions", [])
    if chat:
        chat_choices = [ChatChoice(index=c["index"], message=AssistantMessage(content=c["text"]),
                                   finish_reason=c["finish_reason"]) for c in completions]
        answer: BaseModel = ChatCompletion(id=f"chatcmpl-{call.request_id}", created=created, model=body.model,
                                           choices=chat_choices, usage=usage)
    else:
        choices = [CompletionChoice(text=c["text"], index=c["index"], finish_reason=c["finish_reason"])
                   for c in completions]
        answer = Completion(id=f"cmpl-{call.request_id}", created=created, model=body.model, choices=choices,
                            usage=usage)
    return JSONResponse(answer.model_dump(mode="json"))


@operation(summary="List models (OpenAI style)", tag="openai", responses={200: OpenAIModelList})
async def list_models(request: Request) -> JSONResponse:
    """Trained models the key can use, each by every way to name it: its name (for the newest version of the name),
    `name/version`, and `name@alias` for each alias."""
    async with gateway_of(request).sessions() as session:
        rows, _ = await queries.list_models(session, owner_of(request), trained=True, limit=500)
        aliases = await queries.aliases_of(session, [r.id for r in rows])
    data, named = [], set()
    for r in rows:  # newest first: the first of a name is what the bare name means
        ids = [] if r.name in named else [r.name]
        named.add(r.name)
        ids += [f"{r.name}/{r.version}"] * (r.version is not None) + [f"{r.name}@{a}" for a in aliases.get(r.id, [])]
        created = int(r.created_at.timestamp()) if r.created_at else 0
        data += [OpenAIModel(id=ident, created=created, owned_by=r.owner or "lfz") for ident in ids]
    return JSONResponse(OpenAIModelList(data=data).model_dump(mode="json"))


@operation(summary="Create a completion (OpenAI style)", tag="openai", body=CompletionRequest,
           responses={200: Completion}, streams=200)
async def completions(request: Request) -> Response:
    return await _run(request, chat=False)


@operation(summary="Create a chat completion (OpenAI style)", tag="openai", body=ChatRequest,
           responses={200: ChatCompletion}, streams=200)
async def chat_completions(request: Request) -> Response:
    return await _run(request, chat=True)


routes = [
    Route("/models", list_models, methods=["GET"]),
    Route("/completions", completions, methods=["POST"]),
    Route("/chat/completions", chat_completions, methods=["POST"]),
]
