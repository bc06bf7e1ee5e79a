"""audit records remember the transaction that wrote them, so the sealer never skips a late commit

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:00:00.000000

`audit_records.seq` is assigned at insert, but commits land in another order: a sealer that
remembered "the last seq I sealed" would skip a record whose transaction commits late. Each record
now carries its writer's 64-bit transaction id (`pg_current_xact_id()`). Every transaction older
than a snapshot's xmin has finished, so a sealer that rescans from the xmin of its previous pass
sees every record that can still appear (see ledger/audit/sealer.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

XACT_ID_DEFAULT = "(pg_current_xact_id()::text)::bigint"


def upgrade() -> None:
    # A volatile default rewrites the table once; row triggers (append-only) do not fire for that.
    op.add_column(
        "audit_records",
        sa.Column(
            "xact_id",
            sa.BigInteger(),
            server_default=sa.text(XACT_ID_DEFAULT),
            nullable=False,
        ),
    )
    op.create_index("ix_audit_records_xact_id", "audit_records", ["xact_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_records_xact_id", table_name="audit_records")
    op.drop_column("audit_records", "xact_id")
