"""The database: tables, engine and migrations."""

from infra.db.migrate import migrate
from infra.db.session import DATABASE_DOWN, create_engine, sessionmaker

__all__ = ["DATABASE_DOWN", "create_engine", "migrate", "sessionmaker"]
