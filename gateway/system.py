"""The gateway about itself: health, Prometheus metrics, the OpenAPI document, its docs page and the dashboard."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from gateway.context import Gateway, gateway_of
from gateway.docs_page import render_docs
from gateway.metrics import CONTENT_TYPE
from gateway.openapi import operation
from gateway.views import ComponentState, ErrorDetail, Health

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The dashboard's charting library, installed by `npm ci` (package.json at the repository root), served as is.
UPLOT_DIR = Path(__file__).resolve().parent.parent / "node_modules" / "uplot" / "dist"
CHECK_TIMEOUT_S = 3.0
log = logging.getLogger(__name__)

PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llm-from-zero</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}</style></head>
<body><h1>llm-from-zero</h1>
<p>The gateway is running. The dashboard is not installed yet.</p>
<ul><li><a href="/docs">API documentation</a></li><li><a href="/openapi.json">OpenAPI document</a></li>
<li><a href="/health">Health</a></li></ul></body></html>
"""


async def _check(name: str, probe: Any) -> tuple[str, ComponentState]:
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure means "down"; the detail says why
        detail = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__
        return name, ComponentState(status="down", detail=detail)
    return name, ComponentState(status="ok")


async def _database(gateway: Gateway) -> None:
    async with gateway.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _kafka(gateway: Gateway) -> None:
    client = gateway.publisher.producer.client
    metadata = await client.fetch_all_metadata()
    if not metadata.brokers():
        raise ConnectionError("no broker answered")
    if gateway.topics.job_events not in metadata.topics():
        raise LookupError(f"topic {gateway.topics.job_events} is missing")


@operation(summary="Health of the gateway and what it depends on", tag="system", responses={200: Health},
           extra_responses={503: "A component is down; `error.message` names it. Each component's error "
                                 "(`detail`) is shown only to operators (a key of LFZ_OPERATOR_KEYS, or no keys "
                                 "configured)."}, public=True)
async def health(request: Request) -> JSONResponse:
    gateway = gateway_of(request)
    results = await asyncio.gather(
        _check("database", lambda: _database(gateway)),
        _check("kafka", lambda: _kafka(gateway)),
        _check("object_store", gateway.store.health),
    )
    components = dict(results)
    down = [name for name, state in components.items() if state.status == "down"]
    if not down:
        return JSONResponse(Health(status="ok", components=components).json_dict())
    for name in down:
        log.warning("health: %s is down: %s", name, components[name].detail)
    if not getattr(request.state, "operator", False):  # what failed, and where, is for operators: it names internal addresses
        components = {name: ComponentState(status=state.status) for name, state in components.items()}
    message = "; ".join(f"{name.replace('_', ' ')} is down" + (f" ({components[name].detail})"
                                                               if components[name].detail else "") for name in down)
    error = ErrorDetail(code="unavailable", message=message)
    return JSONResponse(Health(status="down", components=components, error=error).json_dict(), status_code=503)


@operation(summary="Prometheus metrics (operators only when API keys are configured: a key of LFZ_OPERATOR_KEYS)",
           tag="system", responses={200: None})
async def metrics(request: Request) -> Response:
    gateway = gateway_of(request)
    gateway.metrics.subscribers.set(gateway.feed.subscriber_count)
    gateway.metrics.dropped.set(gateway.feed.dropped)
    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)


async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)


async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(render_docs(request.app.state.openapi))


async def index(request: Request) -> Response:
    """`/` belongs to the web dashboard: its page when installed, a short placeholder until then."""
    page = STATIC_DIR / "index.html"
    if page.is_file():
        return FileResponse(page, headers={"Cache-Control": "no-cache"})
    return HTMLResponse(PLACEHOLDER)
