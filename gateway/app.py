"""`create_app(settings)`: the gateway's routes, middleware and lifespan in one place.

The lifespan opens what every request shares (database engine, object store, Kafka producer, the live feed's
consumer) and closes it on shutdown. Middleware, outermost first: metrics, CORS (only for configured origins),
API keys, the URL check, the body-size limit. Errors are mapped to JSON by the handlers of `gateway.errors`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from events import Topics
from gateway import (compare, datasets, evaluation, exports, generation, imports, jobs, models, openai_compat, presets,
                     registry, streamed_upload, sweeps, system, uploads)
from events.proof import Signer
from gateway.auth import AuthMiddleware, redact_access_log
from gateway.context import Gateway, process_name
from gateway.quotas import PerKeyLimit
from gateway.errors import exception_handlers
from gateway.inputs import BodyLimitMiddleware, UrlCheckMiddleware
from gateway.live import LiveFeed
from gateway.metrics import GatewayMetrics, MetricsMiddleware
from gateway.openapi import build_document
from infra.db import create_engine, queries, sessionmaker
from infra.db.together import ReadTogether
from infra.kafka import create_producer, ensure_topics
from infra.objectstore import open_async_object_store
from infra.publisher import Publisher
from infra.settings import Settings

log = logging.getLogger(__name__)

VERSION = "1.0.0"
DESCRIPTION = (
    "Train, evaluate and serve small GPT models. Commands go to the agents over Kafka; state is read from the "
    "projection of the job-event log. Every error is `{\"error\": {\"code\", \"message\", \"field\"?}}`. With API "
    "keys configured, send `Authorization: Bearer <key>` (event streams also take `?api_key=`)."
)


def version_twins(routes: list[Route]) -> list[Route]:
    """Every `/models/{model}...` route again as `/models/{name}/{version}...`, for `name/version` (a path segment
    cannot hold the slash); left out of the OpenAPI document, which describes the one route."""
    return [Route(route.path.replace("/models/{model}", "/models/{name}/{version:int}", 1), route.endpoint,
                  methods=[m for m in route.methods or () if m != "HEAD"], include_in_schema=False)
            for route in routes if route.path.startswith("/models/{model}")]


def api_routes() -> list[BaseRoute]:
    per_model = [*models.routes, *registry.routes, *evaluation.routes, *exports.routes, *generation.routes]
    return [
        *uploads.routes,
        *streamed_upload.routes,
        *datasets.routes,
        *version_twins(per_model),
        *models.routes,
        *registry.routes,
        *compare.routes,
        *sweeps.routes,
        *evaluation.routes,
        *imports.routes,
        *exports.routes,
        *generation.routes,
        *jobs.routes,
        *presets.routes,
        Route("/health", system.health, methods=["GET"]),
    ]


def all_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/", system.index, methods=["GET"]),
        Route("/health", system.health, methods=["GET"]),
        Route("/metrics", system.metrics, methods=["GET"]),
        Route("/openapi.json", system.openapi_document, methods=["GET"]),
        Route("/docs", system.docs, methods=["GET"]),
        Mount("/api/v1", routes=api_routes()),
        Mount("/v1", routes=openai_compat.routes),
    ]
    if system.STATIC_DIR.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=system.STATIC_DIR), name="static"))
    if system.UPLOT_DIR.is_dir():  # without `npm ci` the dashboard still loads and says the charts need it
        routes.append(Mount("/vendor/uplot", StaticFiles(directory=system.UPLOT_DIR), name="uplot"))
    return routes


def middleware(settings: Settings, metrics: GatewayMetrics) -> list[Middleware]:
    stack = [Middleware(MetricsMiddleware, metrics=metrics)]
    if settings.cors_origins:
        stack.append(Middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"], allow_credentials=False,
        ))
    upload_limit = settings.max_dataset_bytes + 64 * 1024  # the file plus its multipart framing
    stack += [
        Middleware(AuthMiddleware, keys=settings.api_keys, operator_keys=settings.operator_keys),
        Middleware(UrlCheckMiddleware),
        Middleware(BodyLimitMiddleware, default_limit=settings.max_body_bytes,
                   limits={"/api/v1/datasets": max(upload_limit, settings.max_body_bytes),
                           "/api/v1/models/import": settings.max_import_bytes + 64 * 1024,
                           # prefixes: an upload's parts, and a file streamed whole (each route checks its own size)
                           "/api/v1/datasets/uploads/": max(settings.upload_part_bytes * 2, settings.max_body_bytes,
                                                            512 * 1024 * 1024),
                           "/api/v1/datasets/files/": settings.max_upload_bytes}),
    ]
    return stack


def create_app(settings: Settings) -> Starlette:
    metrics = GatewayMetrics()
    redact_access_log()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Gateway]]:
        name = f"gateway/{process_name()}"
        await ensure_topics(settings)
        engine = create_engine(settings.resolved_database_url)
        store = open_async_object_store(settings)
        await store.ensure_bucket()
        topics = Topics(settings.topic_prefix)
        publisher = Publisher(create_producer(settings, client_id=name), topics, name, signer=Signer(settings.api_keys))
        await publisher.start()
        feed = LiveFeed(settings, client_id=name)
        try:
            await feed.start()
            sessions = sessionmaker(engine)
            gateway = Gateway(
                settings=settings, topics=topics, engine=engine, sessions=sessions, store=store,
                publisher=publisher, feed=feed, metrics=metrics,
                # The model a generation names: read once for all the requests that arrive together.
                models=ReadTogether(partial(queries.found_models, sessions)),
                streams=PerKeyLimit(settings.max_streams_per_key, "event streams open", "LFZ_MAX_STREAMS_PER_KEY",
                                    "too_many_streams", metrics.streams),
                generations=PerKeyLimit(settings.max_generations_per_key, "generations or evaluations in flight",
                                        "LFZ_MAX_GENERATIONS_PER_KEY", "too_many_generations"),
            )
            log.info("gateway %s ready (auth %s)", name, "on" if settings.auth_enabled else "off")
            yield {"gateway": gateway}
        finally:
            await feed.stop()
            await publisher.stop()
            await engine.dispose()

    app = Starlette(routes=all_routes(), middleware=middleware(settings, metrics),
                    exception_handlers=exception_handlers(), lifespan=lifespan)
    app.state.openapi = build_document(app.routes, "llm-from-zero gateway", VERSION, DESCRIPTION)
    app.state.metrics = metrics
    return app
