"""API keys: who is calling, as an owner id derived from the key (keys themselves are never stored or logged).

With `LFZ_API_KEYS` set, every route but the public ones needs `Authorization: Bearer <key>`. Browsers' EventSource
cannot send headers, so the event-stream GET routes also take `?api_key=<key>`; the access log never shows it.
Operators' routes (`/metrics`, and the errors behind `/health`) need a key of `LFZ_OPERATOR_KEYS` instead: a tenant's
key reads neither. Without keys (one user on their own machine) every route is open to that user.
"""

from __future__ import annotations

import hmac
import logging
import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from events.proof import owner_of
from gateway.errors import error_response

# Open to everyone: the health check, the dashboard (its page, files and charting library) and the API's description.
PUBLIC_PATHS = frozenset({"/", "/health", "/api/v1/health", "/docs", "/openapi.json", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/", "/vendor/")
OPERATOR_PATHS = frozenset({"/metrics"})
_KEY_IN_QUERY = re.compile(r"(?i)((?:^|[?&])api_key=)[^&#\s\"]*")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def is_event_stream(method: str, path: str) -> bool:
    return method == "GET" and path.rstrip("/").endswith("/events")


def bearer_token(headers: dict[bytes, bytes]) -> str | None:
    value = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def query_key(query_string: bytes) -> str | None:
    for name, value in parse_qsl(query_string.decode("latin-1")):
        if name == "api_key" and value:
            return value
    return None


def redact_keys(text: str) -> str:
    """A URL (or a log line holding one) with the value of every `api_key` parameter replaced."""
    return _KEY_IN_QUERY.sub(r"\1[redacted]", text)


class RedactKeys(logging.Filter):
    """Keeps keys sent as `?api_key=` out of uvicorn's access log, which writes the path with its query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(arg, str) and "api_key" in arg for arg in record.args):
            record.args = tuple(redact_keys(arg) if isinstance(arg, str) else arg for arg in record.args)
        if isinstance(record.msg, str) and "api_key" in record.msg:
            record.msg = redact_keys(record.msg)
        return True


def redact_access_log() -> None:
    """Install `RedactKeys` on uvicorn's access logger, once per process."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactKeys) for existing in logger.filters):
        logger.addFilter(RedactKeys())


class KeyRing:
    """The configured keys, compared in constant time."""

    def __init__(self, keys: list[str]):
        self._keys = [key.encode() for key in keys if key]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def accepts(self, key: str) -> bool:
        candidate = key.encode()
        found = False
        for known in self._keys:
            found |= hmac.compare_digest(candidate, known)
        return found


class AuthMiddleware:
    """Sets `request.state.owner` (None when auth is off) or answers 401 (no key) / 403 (a key we do not know)."""

    def __init__(self, app: ASGIApp, keys: list[str], operator_keys: list[str] | None = None):
        self.app = app
        self.ring = KeyRing(keys)
        self.operators = KeyRing(operator_keys or [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["owner"] = None
        path, method = scope["path"], scope["method"]
        headers = dict(scope["headers"])
        key = bearer_token(headers)
        state["operator"] = not self.ring.enabled or (key is not None and self.operators.accepts(key))
        if not self.ring.enabled or is_public(path) or method == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if path in OPERATOR_PATHS:
            if state["operator"]:
                await self.app(scope, receive, send)
                return
            response = error_response(
                401 if key is None else 403, "unauthorized" if key is None else "forbidden",
                f"{path} is for operators: send `Authorization: Bearer <key>` with a key of LFZ_OPERATOR_KEYS",
                headers={"WWW-Authenticate": "Bearer"} if key is None else None, path=path)
            await response(scope, receive, send)
            return
        if key is None and is_event_stream(method, path):
            key = query_key(scope.get("query_string", b""))
        if key is None:
            response = error_response(
                401, "unauthorized", "an API key is required: send `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"}, path=path,
            )
        elif not self.ring.accepts(key):
            response = error_response(403, "forbidden", "this API key is not valid", path=path)
        else:
            state["owner"] = owner_of(key)
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
