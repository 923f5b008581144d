import asyncio

import pytest

from infra.db import create_engine, sessionmaker
from infra.db import migrate

_engines = []


async def make_sessions(path):
    """A real SQLite database with the migrations applied (the pure-logic tests need no server)."""
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(migrate, url, True)  # Alembic runs its own event loop
    engine = create_engine(url)
    _engines.append(engine)
    return sessionmaker(engine)


@pytest.fixture
async def sessions(tmp_path):
    yield await make_sessions(tmp_path / "lfz.db")
    while _engines:
        await _engines.pop().dispose()
