"""The model registry: a name's versions, aliases that point at one of them, and which checkpoint of a version serves.

Every change is a fact on the log (`ModelAliasSet`, `ModelAliasRemoved`, `ServingCheckpointChosen`), published here
and applied by the record agent, so a replay of the log rebuilds the registry; each endpoint answers once its change
is in the tables, so a read right after it sees it. Aliases and versions belong to the caller: another owner's
name has no versions here.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from events import ModelAliasRemoved, ModelAliasSet, ServingCheckpointChosen, new_id
from events.job import JobEvent
from gateway.bodies import AliasBody, ServingBody
from gateway.context import gateway_of, owner_of
from gateway.errors import ApiError
from gateway.inputs import json_body
from gateway.models import visible_model
from gateway.openapi import operation
from gateway.views import ModelView, View
from infra.db import queries

ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")  # as events.fields.AliasName


class VersionList(View):
    name: str
    items: list[ModelView] = Field(description="The name's live versions, oldest first.")
    aliases: dict[str, int] = Field(description="Each alias of the name and the version it points at.")


class AliasView(View):
    name: str
    alias: str
    version: int | None = Field(description="The version it points at; null once removed.")
    model_id: str | None = None


def _alias_of(request: Request) -> str:
    alias = request.path_params["alias"]
    if not ALIAS.match(alias):
        raise ApiError(422, "invalid", f"alias: {alias!r} is not an alias: a letter or _, then letters, digits, "
                                       "_ . - (64 at most); a number would read as a version", "alias")
    return alias


async def _publish(request: Request, fact_type: type[JobEvent], **fields: Any) -> None:
    gateway = gateway_of(request)
    await gateway.publisher.fact(fact_type(job_id=new_id(), seq=1, producer=gateway.producer_id,
                                           owner=owner_of(request), kind="registry", **fields))


async def _recorded(request: Request, probe: Any) -> None:
    gateway = gateway_of(request)
    if await queries.wait_for(gateway.sessions, probe, gateway.settings.submit_wait_s) is None:
        raise ApiError(503, "unavailable", "the change was published but is not recorded yet; read it again shortly")


@operation(summary="List a name's versions and aliases", tag="registry", responses={200: VersionList})
async def list_versions(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    async with gateway_of(request).sessions() as session:
        rows = await queries.versions(session, owner_of(request), name)
        aliases = await queries.aliases_of(session, [r.id for r in rows])
    if not rows:
        raise ApiError(404, "not_found", f"there is no model named {name!r}", "name")
    versions = {r.id: r.version for r in rows}
    pointing = {alias: versions[model_id] for model_id, names in aliases.items() for alias in names}
    listing = VersionList(name=name, items=[ModelView.of(r, aliases.get(r.id)) for r in rows],
                          aliases=dict(sorted(pointing.items())))
    return JSONResponse(listing.json_dict())


@operation(summary="Point an alias at a version", tag="registry", body=AliasBody, responses={200: AliasView})
async def set_alias(request: Request) -> JSONResponse:
    """`name@alias` then names that version everywhere a model is named (REST, CLI, `/v1`, Kafka commands). An alias
    that pointed elsewhere moves, in one step."""
    name, alias = request.path_params["name"], _alias_of(request)
    body = await json_body(request, AliasBody)
    owner = owner_of(request)
    async with gateway_of(request).sessions() as session:
        row = await queries.model_named(session, owner, name, body.version)
    if row is None:
        raise ApiError(404, "not_found", f"version: model {name!r} has no version {body.version}", "version")
    await _publish(request, ModelAliasSet, name=name, alias=alias, model_id=row.id, version=body.version)

    async def moved(session: Any) -> bool:
        found = await queries.model_aliased(session, owner, name, alias)
        return found is not None and found.id == row.id

    await _recorded(request, moved)
    return JSONResponse(AliasView(name=name, alias=alias, version=body.version, model_id=row.id).json_dict())


@operation(summary="Remove an alias", tag="registry", responses={200: AliasView})
async def remove_alias(request: Request) -> JSONResponse:
    name, alias = request.path_params["name"], _alias_of(request)
    owner = owner_of(request)
    async with gateway_of(request).sessions() as session:
        row = await queries.model_aliased(session, owner, name, alias)
    if row is None:
        raise ApiError(404, "not_found", f"alias: {name}@{alias} points at nothing", "alias")
    await _publish(request, ModelAliasRemoved, name=name, alias=alias)

    async def gone(session: Any) -> bool:
        return await queries.model_aliased(session, owner, name, alias) is None

    await _recorded(request, gone)
    return JSONResponse(AliasView(name=name, alias=alias, version=None).json_dict())


@operation(summary="Choose which checkpoint of a version serves", tag="registry", body=ServingBody,
           responses={200: ModelView})
async def choose_serving(request: Request) -> JSONResponse:
    """`best` (by validation loss, the default) or `last`: generation, evaluation and export use it from now on."""
    row = await visible_model(request)
    body = await json_body(request, ServingBody)
    owner = owner_of(request)
    await _publish(request, ServingCheckpointChosen, model_id=row.id, checkpoint=body.checkpoint)

    async def chosen(session: Any) -> Any:
        found = await queries.get_model(session, owner, row.id)
        return found if found is not None and found.serve == body.checkpoint else None

    await _recorded(request, chosen)
    async with gateway_of(request).sessions() as session:
        found = await queries.get_model(session, owner, row.id)
        aliases = await queries.aliases_of(session, [row.id])
    assert found is not None
    return JSONResponse(ModelView.of(found, aliases.get(row.id)).json_dict())


routes = [
    Route("/models/{name}/versions", list_versions, methods=["GET"]),
    Route("/models/{name}/aliases/{alias}", set_alias, methods=["PUT"]),
    Route("/models/{name}/aliases/{alias}", remove_alias, methods=["DELETE"]),
    Route("/models/{model}/serving", choose_serving, methods=["PUT"]),
]
