"""the model registry: a model row is a version of its name (with its parent), aliases of a name's versions,
which checkpoint of a version serves, and the counters that number a name's versions

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("parent_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("serve", sa.String(length=10), nullable=False, server_default="best"))
    # The models there already become versions of their names, numbered in the order they were created.
    models = sa.table("models", sa.column("id"), sa.column("owner"), sa.column("name"), sa.column("created_at"),
                      sa.column("version"))
    connection = op.get_bind()
    rows = connection.execute(sa.select(models.c.id, models.c.owner, models.c.name)
                              .order_by(models.c.created_at, models.c.id)).all()
    counts: dict[tuple[str | None, str], int] = {}
    for model_id, owner, name in rows:
        counts[(owner, name)] = counts.get((owner, name), 0) + 1
        connection.execute(sa.update(models).where(models.c.id == model_id).values(version=counts[(owner, name)]))
    op.create_table(
        "model_aliases",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_model_aliases")),
    )
    op.create_index(op.f("ix_model_aliases_owner"), "model_aliases", ["owner"])
    op.create_index(op.f("ix_model_aliases_model_id"), "model_aliases", ["model_id"])
    op.create_table(
        "model_version_counters",
        sa.Column("owner_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("owner_key", "name", name=op.f("pk_model_version_counters")),
    )


def downgrade() -> None:
    op.drop_table("model_version_counters")
    op.drop_index(op.f("ix_model_aliases_model_id"), table_name="model_aliases")
    op.drop_index(op.f("ix_model_aliases_owner"), table_name="model_aliases")
    op.drop_table("model_aliases")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("serve")
        batch.drop_column("parent_id")
        batch.drop_column("version")
