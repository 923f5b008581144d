"""The migrations and the table definitions describe the same schema: a database migrated to the head has every
table, column and index the code expects, and nothing else."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from infra.db import migrate
from infra.db.tables import Base


def test_the_migrated_schema_is_the_one_the_tables_describe(tmp_path):
    path = tmp_path / "lfz.db"
    migrate(f"sqlite+aiosqlite:///{path}", quiet=True)
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []
