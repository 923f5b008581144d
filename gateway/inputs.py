"""Where request data enters: the body-size limit, the URL check, and JSON bodies and query strings turned into
typed models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from events import DecodeError
from events.codec import bad_string_at, bad_string_error, parse_json
from gateway.errors import ApiError, error_response, from_validation_error

M = TypeVar("M", bound=BaseModel)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the request body is larger than the limit of {limit} bytes")


class BodyLimitMiddleware:
    """413 for a body over the limit: at once from Content-Length, or as soon as a streamed body passes it.

    Uploads (`POST /api/v1/datasets`) get the dataset limit plus room for the multipart framing; a key ending in `/`
    sets the limit of every path under it (the longest such prefix wins)."""

    def __init__(self, app: ASGIApp, default_limit: int, limits: dict[str, int]):
        self.app = app
        self.default_limit = default_limit
        self.limits = limits

    def limit_of(self, path: str) -> int:
        exact = self.limits.get(path.rstrip("/"))
        if exact is not None:
            return exact
        prefixes = [p for p in self.limits if p.endswith("/") and path.startswith(p)]
        return self.limits[max(prefixes, key=len)] if prefixes else self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = too_large(limit)
            await error_response(error.status, error.code, error.message, path=scope["path"])(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, limited_receive, send)


class UrlCheckMiddleware:
    """400 for a path or query string holding a NUL character (`%00`): no id, name or parameter can contain one,
    and PostgreSQL refuses it in a query, so the request is answered before anything looks it up."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")):
            response = error_response(400, "bad_request", "the URL holds a NUL character (%00); no id, name or "
                                                          "parameter may contain one", path=scope["path"])
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def json_body(request: Request, model: type[M], empty_ok: bool = False,
                    check: Callable[[dict[str, Any]], None] | None = None) -> M:
    """The body as `model`: 400 when it is not JSON, 422 naming the field when it does not validate. `check` sees the
    decoded object first (and raises ApiError for what the model cannot say)."""
    raw = await request.body()
    value: Any
    if not raw.strip():
        if not empty_ok:
            raise ApiError(400, "bad_request", "the request needs a JSON body")
        value = {}
    else:
        try:
            value = parse_json(raw)
        except DecodeError as exc:
            raise ApiError(400, "bad_request", f"the body is {exc.reason}") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid", f"the body must be a JSON object, got {type(value).__name__}")
    bad = bad_string_at(value)
    if bad is not None:
        message, field = bad_string_error(bad)
        raise ApiError(422, "invalid", message, field)
    if check is not None:
        check(value)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def query(request: Request, model: type[M]) -> M:
    """Query parameters as `model`; 422 naming the parameter when one does not validate."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def model_ref(request: Request) -> str:
    """The model a path names: `/models/{model}/...` (an id, a name, `name@alias`) or `/models/{name}/{version}/...`
    (the same routes, for `name/version`, which a single path segment cannot hold)."""
    params = request.path_params
    return params["model"] if "model" in params else f"{params['name']}/{params['version']}"


def last_event_id(request: Request, from_query: int | None) -> int:
    """Resume point of an event stream: the `Last-Event-ID` header (EventSource sends it on reconnect) or
    `?last_event_id=`; 0 means from the start."""
    header = request.headers.get("last-event-id")
    if header is not None and header.strip():
        text = header.strip()
        if not text.isdigit() or len(text) > 10:
            raise ApiError(422, "invalid", "Last-Event-ID: must be a sequence number", "Last-Event-ID")
        return int(text)
    return from_query or 0
