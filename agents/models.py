"""Finding a trained model by id or by name, as its owner sees it."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.tables import Model


class ModelUnavailable(Exception):
    def __init__(self, reason: str, field: str):
        super().__init__(reason)
        self.reason, self.field = reason, field


async def find_trained_model(session: AsyncSession, owner: str | None, model_id: str | None,
                             model_name: str | None) -> Model:
    """The model a request names; raises ModelUnavailable (naming the field) when it is missing or not trained."""
    if model_id is not None:
        model = await session.get(Model, model_id)
        field, label = "model_id", f"model {model_id}"
    else:
        result = await session.execute(
            select(Model)
            .where(Model.name == model_name, Model.owner.is_(owner) if owner is None else Model.owner == owner,
                   Model.status != "deleted")
            .order_by(Model.trained_at.desc().nulls_last(), Model.created_at.desc())
            .limit(1)
        )
        model = result.scalars().first()
        field, label = "model_name", f"model named {model_name!r}"
    if model is None or model.status == "deleted" or model.owner != owner:
        raise ModelUnavailable(f"{field}: there is no {label}", field)
    if model.trained_at is None or not (model.best_checkpoint or model.latest_checkpoint):
        raise ModelUnavailable(f"{field}: {label} is not trained yet (status {model.status})", field)
    return model


def serving_checkpoint(model: Model) -> str:
    """The checkpoint that serves a model: the best by validation loss, else the latest."""
    key = model.best_checkpoint or model.latest_checkpoint
    assert key is not None
    return key


async def wait_for_trained_model(sessions: async_sessionmaker[AsyncSession], owner: str | None,
                                 model_id: str | None, model_name: str | None, patience_s: float = 3.0) -> Model:
    """`find_trained_model`, retried for a few seconds: a model that finished training a moment ago may not be in
    the database yet (the projector runs a little behind the log), so a miss is only final after a short wait."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            async with sessions() as session:
                return await find_trained_model(session, owner, model_id, model_name)
        except ModelUnavailable:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.1)
