"""Engine and sessions: one engine per process, one `AsyncSession` per task."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext, make_url
from asyncpg.exceptions import CannotConnectNowError, ConnectionDoesNotExistError
from asyncpg.exceptions import InterfaceError as DriverInterfaceError
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

# Errors that mean "the database is not there right now", as opposed to a statement it refuses: what the pool, the
# driver and the network raise while a server is down, restarting or out of connections. The one list of them.
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, DisconnectionError, PoolTimeout, CannotConnectNowError,
    ConnectionDoesNotExistError, DriverInterfaceError, OSError, ConnectionError, asyncio.TimeoutError,
)


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # Several processes (gateway, workers, projector) share the file: WAL lets readers run beside a writer.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    engine = create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    event.listen(engine.sync_engine, "handle_error", _server_going_away)
    return engine


# SQLSTATEs of a server that is going away or not back yet, not of a statement it refuses: class 08 (connection
# exception) and 57P01-57P03 (shut down by an administrator, crashed, still starting). asyncpg raises these as
# server errors, which SQLAlchemy passes on as a plain DBAPIError: without this, a PostgreSQL restart would look
# like a bad statement, and the projector would dead-letter facts instead of waiting for the database.
_GOING_AWAY = ("08", "57P01", "57P02", "57P03")


def _server_going_away(context: ExceptionContext) -> OperationalError | None:
    sqlstate = getattr(context.original_exception, "sqlstate", None) or ""
    if isinstance(context.sqlalchemy_exception, OperationalError):
        return None
    # SQLAlchemy counts a task cancelled mid-statement as a disconnect: it must stay a cancellation, or a retry loop
    # would swallow it and the task would never stop.
    if not isinstance(context.original_exception, Exception):
        return None
    # A connection the dialect itself found broken is an outage too, whatever its error's class.
    if not (sqlstate.startswith(_GOING_AWAY) or context.is_disconnect):
        return None
    context.is_disconnect = True  # the pool drops that connection instead of handing it out again
    return OperationalError(context.statement, context.parameters, context.original_exception,
                            connection_invalidated=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
