"""datasets of gigabytes: a dataset's format, compression, text column and documents (its characters unknown until
it is tokenized), and the tokenizations of each dataset

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.alter_column("characters", existing_type=sa.BigInteger(), nullable=True)
        batch.alter_column("sha256", existing_type=sa.String(length=64), type_=sa.String(length=72))
        batch.add_column(sa.Column("format", sa.String(length=16), nullable=False, server_default="text"))
        batch.add_column(sa.Column("compression", sa.String(length=16), nullable=False, server_default="none"))
        batch.add_column(sa.Column("text_column", sa.String(length=200), nullable=False, server_default="text"))
        batch.add_column(sa.Column("documents", sa.BigInteger(), nullable=True))
    op.create_table(
        "tokenizations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=32), nullable=True),
        sa.Column("tokenizer", sa.String(length=16), nullable=True),
        sa.Column("tokenizer_options", JSON, nullable=True),
        sa.Column("sample_bytes", sa.BigInteger(), nullable=True),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("vocab_size", sa.Integer(), nullable=True),
        sa.Column("dtype", sa.String(length=8), nullable=True),
        sa.Column("shards", sa.Integer(), nullable=True),
        sa.Column("manifest_key", sa.String(length=300), nullable=True),
        sa.Column("wall_s", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokenizations")),
    )
    op.create_index(op.f("ix_tokenizations_dataset_id"), "tokenizations", ["dataset_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_tokenizations_dataset_id"), table_name="tokenizations")
    op.drop_table("tokenizations")
    with op.batch_alter_table("datasets") as batch:
        for column in ("documents", "text_column", "compression", "format"):
            batch.drop_column(column)
        batch.alter_column("sha256", existing_type=sa.String(length=72), type_=sa.String(length=64))
        batch.alter_column("characters", existing_type=sa.BigInteger(), nullable=False)
