"""job queue: room in a job's id for the helpers of a job of several hosts (`<job id>+<attempt>.<index>`)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_queue") as batch:
        batch.alter_column("job_id", type_=sa.String(100), existing_type=sa.String(64), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("job_queue") as batch:
        batch.alter_column("job_id", type_=sa.String(64), existing_type=sa.String(100), existing_nullable=False)
