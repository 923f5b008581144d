"""Migrations: `migrate(url)` brings a database to the latest schema (Alembic, the scripts in migrations/); the
`python -m infra.db migrate` command does it for the database the settings name."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from infra.settings import load_settings

ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"


def alembic_config(url: str, quiet: bool = False) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["url"] = url
    config.attributes["quiet"] = quiet
    return config


def migrate(url: str, quiet: bool = False) -> None:
    command.upgrade(alembic_config(url, quiet), "head")


def main(argv: list[str]) -> int:
    if argv[:1] != ["migrate"]:
        print("usage: python -m infra.db migrate", file=sys.stderr)
        return 2
    url = load_settings().resolved_database_url
    try:
        migrate(url)
    except Exception as exc:  # one clear line instead of a traceback: the usual cause is a server that is down
        print(f"error: could not migrate {url.split('@')[-1]}: {exc}", file=sys.stderr)
        return 1
    return 0

