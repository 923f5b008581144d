"""The registry's part of the projection: version numbers, aliases, and which checkpoint of a version serves.

A model row is one version of its name. The agent that accepts a training (or import) job numbers it (1, 2, 3 ... per
owner and name, deleted versions included, so a number is never given twice) and says so in JobAccepted, so a
replay of the log repeats it; an older fact without a number gets the next one here. An alias is
one row per owner, name and alias, rewritten when the alias moves; a fact that names another owner's version, a
version of another name, or a deleted one changes nothing.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from events import ModelAliasRemoved, ModelAliasSet, ServingCheckpointChosen
from infra.db.queries import belongs_to
from infra.db.tables import Model, ModelAlias


async def next_version(session: AsyncSession, owner: str | None, name: str) -> int:
    owned = belongs_to(Model.owner, owner)
    latest = await session.scalar(select(func.max(Model.version)).where(owned, Model.name == name))
    return (latest or 0) + 1


async def on_alias_set(session: AsyncSession, event: ModelAliasSet) -> None:
    model = await session.get(Model, event.model_id)
    if (model is None or model.status == "deleted" or model.owner != event.owner or model.name != event.name
            or model.version != event.version):
        return
    key = ModelAlias.key_of(event.owner, event.name, event.alias)
    row = await session.get(ModelAlias, key)
    if row is None:
        session.add(ModelAlias(key=key, owner=event.owner, name=event.name, alias=event.alias,
                               model_id=event.model_id, updated_at=event.time))
    else:
        row.model_id, row.updated_at = event.model_id, event.time


async def on_alias_removed(session: AsyncSession, event: ModelAliasRemoved) -> None:
    await session.execute(delete(ModelAlias).where(ModelAlias.key == ModelAlias.key_of(event.owner, event.name,
                                                                                       event.alias)))


async def on_serving_chosen(session: AsyncSession, event: ServingCheckpointChosen) -> None:
    model = await session.get(Model, event.model_id)
    if model is not None and model.status != "deleted" and model.owner == event.owner:
        model.serve, model.updated_at = event.checkpoint, event.time


async def forget_aliases_of(session: AsyncSession, model_id: str) -> None:
    """A deleted version takes its aliases with it."""
    await session.execute(delete(ModelAlias).where(ModelAlias.model_id == model_id))


HANDLERS = {
    ModelAliasSet: on_alias_set,
    ModelAliasRemoved: on_alias_removed,
    ServingCheckpointChosen: on_serving_chosen,
}
