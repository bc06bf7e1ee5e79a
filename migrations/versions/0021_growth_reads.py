"""growth reads: the audit trail searched by action in seq order

Revision ID: 0021_growth_reads
Revises: 0020_webhooks
Create Date: 2026-12-07 05:00:00.000000

- `ix_audit_records_action_seq` on `audit_records (action, seq)`: `GET /v1/audit?action=` (and
  the console's search by action) reads its page in seq order from the cursor, one index range,
  instead of walking every record in seq order until a page of that action is found (the whole
  trail for an action that is rare or absent). Built concurrently: writes go on meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0021_growth_reads"
down_revision: str | None = "0020_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTION_INDEX = "ix_audit_records_action_seq"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {ACTION_INDEX} ON audit_records (action, seq)"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {ACTION_INDEX}")
