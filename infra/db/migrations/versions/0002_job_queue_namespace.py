"""job queue: one queue per deployment (topic prefix) sharing a database

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_queue") as batch:
        batch.add_column(sa.Column("namespace", sa.String(length=100), nullable=False, server_default="lfz."))
        batch.drop_constraint("pk_job_queue", type_="primary")
        batch.create_primary_key("pk_job_queue", ["namespace", "job_id"])


def downgrade() -> None:
    with op.batch_alter_table("job_queue") as batch:
        batch.drop_constraint("pk_job_queue", type_="primary")
        batch.create_primary_key("pk_job_queue", ["job_id"])
        batch.drop_column("namespace")
