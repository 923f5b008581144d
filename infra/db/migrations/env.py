"""Runs the migrations on the async engine for the URL in the settings (or the one the caller passed)."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from infra.db.session import create_engine
from infra.db.tables import Base
from infra.settings import load_settings

config = context.config
if config.config_file_name is not None and not config.attributes.get("quiet"):
    from logging.config import fileConfig

    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    return config.attributes.get("url") or load_settings().resolved_database_url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
