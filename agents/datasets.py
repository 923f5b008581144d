"""Which stored datasets a tenant may read: its own uploads, and the texts its own models were trained on.

A command names a dataset by its object key, and a key is easy to write down: another tenant's upload id, or a
model's inline text. So an agent checks a key against the projection before a job reads it. A command without an
owner (auth off) sees every dataset, as the gateway does then.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.tables import Dataset, Model


async def owns_dataset(session: AsyncSession, owner: str, key: str) -> bool:
    upload = await session.scalar(select(Dataset.id).where(Dataset.key == key, Dataset.owner == owner).limit(1))
    if upload is not None:
        return True
    trained_on = await session.scalar(
        select(Model.id).where(Model.dataset_key == key, Model.owner == owner).limit(1)
    )
    return trained_on is not None


async def readable_dataset(sessions: async_sessionmaker[AsyncSession], owner: str | None, key: str,
                           patience_s: float = 3.0) -> bool:
    """Whether `owner` may read the dataset at `key`. A miss is only final after `patience_s`: an upload answered a
    moment ago may not have reached the projection yet."""
    if owner is None:
        return True
    deadline = time.monotonic() + patience_s
    while True:
        async with sessions() as session:
            if await owns_dataset(session, owner, key):
                return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.2)
