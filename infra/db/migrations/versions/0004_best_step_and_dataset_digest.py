"""models.best_step (which checkpoint serves, shown without a lookup), datasets.sha256 (an upload of the same file
by the same owner is stored once)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("best_step", sa.Integer(), nullable=True))
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))
        batch.create_index("ix_datasets_owner_sha256", ["owner", "sha256"])


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_index("ix_datasets_owner_sha256")
        batch.drop_column("sha256")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("best_step")
