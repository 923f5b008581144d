"""job queue: the terminal fact of a completing job in a column of its own (it was kept inside `spec`)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(JSONB(), "postgresql")
_queue = sa.table("job_queue", sa.column("namespace", sa.String), sa.column("job_id", sa.String),
                  sa.column("spec", _json), sa.column("outbox", _json))


def upgrade() -> None:
    with op.batch_alter_table("job_queue") as batch:
        batch.add_column(sa.Column("outbox", _json, nullable=True))
    # A job that was completing when the system was upgraded keeps its unpublished terminal fact.
    connection = op.get_bind()
    for namespace, job_id, spec in connection.execute(sa.select(_queue.c.namespace, _queue.c.job_id, _queue.c.spec)):
        if isinstance(spec, dict) and "_outbox" in spec:
            rest = {k: v for k, v in spec.items() if k != "_outbox"}
            connection.execute(_queue.update().where(_queue.c.namespace == namespace, _queue.c.job_id == job_id)
                               .values(spec=rest, outbox=spec["_outbox"]))


def downgrade() -> None:
    with op.batch_alter_table("job_queue") as batch:
        batch.drop_column("outbox")
