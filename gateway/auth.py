"""API keys: who is calling, as an owner id derived from the key (keys themselves are never stored or logged).

With `LFZ_API_KEYS` set, every route but the public ones needs `Authorization: Bearer <key>`. Browsers' EventSource
cannot send headers, so the event-stream GET routes also take `?api_key=<key>`.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import error_response

# Open to everyone: the health check, the dashboard (its page, files and charting library) and the API's description.
PUBLIC_PATHS = frozenset({"/", "/health", "/api/v1/health", "/docs", "/openapi.json", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/", "/vendor/")


def owner_of(api_key: str) -> str:
    """The tenant id every row and message carries: a short digest of the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


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

    def __init__(self, app: ASGIApp, keys: list[str]):
        self.app = app
        self.ring = KeyRing(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["owner"] = None
        path, method = scope["path"], scope["method"]
        if not self.ring.enabled or is_public(path) or method == "OPTIONS":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        key = bearer_token(headers)
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
