"""Every error the gateway answers with, as JSON `{"error": {"code", "message", "field"?}}`, mapped in one place.

Endpoints raise `ApiError`; the handlers below turn it, Starlette's HTTP errors, validation errors and outages of
the database, Kafka or the object store into responses. Nothing leaves the gateway as a traceback.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from events import Rejected
from events.codec import describe_validation_error
from infra.kafka import MessageRefused
from infra.retry import UNAVAILABLE, first_line

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "quota_exceeded",
    502: "upstream_failed", 503: "unavailable", 504: "timeout",
}


class ApiError(Exception):
    """An answer other than success: the status, a stable machine-readable code, a message, the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


# The OpenAI-compatible routes answer in the shape OpenAI's clients parse: {"error": {"message", "type", "param",
# "code"}}, and 400 where the rest of the API says 422.
OPENAI_PREFIX = "/v1/"
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def openai_error_body(status: int, code: str, message: str, field: str | None = None) -> dict[str, Any]:
    kind = _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": field, "code": code}}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None, path: str = "") -> JSONResponse:
    """The error as JSON; `path` is the request's, so that the /v1 routes answer in OpenAI's shape."""
    if path.startswith(OPENAI_PREFIX):
        status = 400 if status == 422 else status
        return JSONResponse(openai_error_body(status, code, message, field), status_code=status, headers=headers)
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


def not_found(what: str, ident: str, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident!r} not found", field)


def invalid(field: str | None, message: str) -> ApiError:
    return ApiError(422, "invalid", f"{field}: {message}" if field else message, field)


def from_validation_error(exc: ValidationError, prefix: str | None = None) -> ApiError:
    """422 naming the first field at fault (as a dotted path, under `prefix` when the model is a part of the body)."""
    message, field = describe_validation_error(exc)
    if prefix:
        field = f"{prefix}.{field}" if field else prefix
        message = f"{prefix}.{message}"
    return ApiError(422, "invalid", message, field)


# Which backing service an exception came from, judged by the modules its traceback passed through.
_COMPONENT_MODULES = (
    ("database", ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "infra.db")),
    ("kafka", ("aiokafka", "infra.kafka", "infra.publisher")),
    ("object store", ("minio", "urllib3", "infra.objectstore", "botocore", "aiobotocore")),
)
# What the infra clients raise when their server is down: answered 503, not 500.
OUTAGE_TYPES: tuple[type[BaseException], ...] = (*UNAVAILABLE, TimeoutError)


def component_of(exc: BaseException) -> str | None:
    """'database', 'kafka' or 'object store' when the exception (or its causes) came through that client library."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        modules = [type(current).__module__] + [
            frame.f_globals.get("__name__", "") for frame, _ in traceback.walk_tb(current.__traceback__)
        ]
        for module in reversed(modules):  # innermost frame first: where the failure happened
            for component, prefixes in _COMPONENT_MODULES:
                if module.startswith(prefixes):
                    return component
        current = current.__cause__ or current.__context__
    return None


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, OUTAGE_TYPES)


def outage_response(exc: BaseException, path: str = "") -> JSONResponse:
    component = component_of(exc) or "a backing service"
    detail = first_line(exc)[:200]
    log.warning("%s unavailable: %s: %s", component, type(exc).__name__, detail)
    return error_response(  # the exception's text stays in the log: it may hold internal addresses
        503, "unavailable", f"{component} is unavailable, try again shortly", headers={"Retry-After": "5"}, path=path,
    )


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers, request.url.path)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, HTTP_CODES.get(exc.status_code, "error"), message,
                          headers=dict(exc.headers or {}), path=request.url.path)


async def handle_rejected(request: Request, exc: Exception) -> Response:
    """A check of the request's content that the events package holds (a dataset's text, for one): 422."""
    assert isinstance(exc, Rejected)
    return error_response(422, "invalid", exc.reason, exc.field, path=request.url.path)


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    error = from_validation_error(exc)
    return error_response(error.status, error.code, error.message, error.field, path=request.url.path)


async def handle_message_refused(request: Request, exc: Exception) -> Response:
    """A request that would make a Kafka message larger than the broker takes (the caps in front should catch it)."""
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return error_response(413, "too_large", f"the request is too large to pass through Kafka ({exc}); upload large "
                                            f"texts as a dataset (POST /api/v1/datasets)", path=request.url.path)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Outages become 503 naming the service; anything else is a bug, logged here and answered without detail."""
    if is_outage(exc):
        return outage_response(exc, request.url.path)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal error; the gateway's log has the details",
                          path=request.url.path)


def exception_handlers() -> dict[Any, Any]:
    handlers: dict[Any, Any] = {
        ApiError: handle_api_error,
        Rejected: handle_rejected,
        HTTPException: handle_http_error,
        ValidationError: handle_validation_error,
        MessageRefused: handle_message_refused,
        Exception: handle_unexpected,
    }
    for outage in OUTAGE_TYPES:
        handlers[outage] = handle_unexpected
    return handlers
