"""The database: tables, engine and migrations."""

from infra.db.session import create_engine, sessionmaker

__all__ = ["create_engine", "sessionmaker"]
