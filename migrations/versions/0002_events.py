"""consumer kit: the last sequence each consumer group applied per subject

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:00:00.000000

The consumer kit detects lost events by the per-account `sequence` (gapless by contract). It
must remember the last sequence it applied per subject across restarts, in the same transaction
as its inbox row and its projection, so the memory lives in the consumer's database.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consumer_sequences",
        sa.Column("group_id", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "subject", name=op.f("pk_consumer_sequences")),
    )


def downgrade() -> None:
    op.drop_table("consumer_sequences")
