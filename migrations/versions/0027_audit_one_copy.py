"""audit records keep their data once: the writer's text, which the seal chain hashes parsed

Revision ID: 0027_audit_one_copy
Revises: 0026_outbox_packed
Create Date: 2026-12-07 16:45:00.000000

Since 0009 a record held its `data` twice: `data_text` (json), the writer's exact text, which
the trail answers and the Merkle leaf covers, and `data` (jsonb), the same value parsed, which
the seal chain hashes. The second copy was about 700 of the 1,600 bytes a transfer's record
wrote. New records leave `data` NULL; every reader takes `data`, or else `data_text` parsed as
jsonb (ledger/audit/repository.py, `record_data`), which is the value the column would have
held: both were made from the same text, so every seal hashes as before and old records need
no change. A check keeps at least one of the two on every row.

Order: migrate, then deploy (the code before this writes both columns, which the new schema
takes; the new code's NULL `data` would fail the old NOT NULL). The downgrade fills `data` from
`data_text` where it is NULL, with the append-only trigger set aside for that one statement.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0027_audit_one_copy"
down_revision: str | None = "0026_outbox_packed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = "ck_audit_records_has_data"


def upgrade() -> None:
    op.alter_column("audit_records", "data", nullable=True)
    op.execute(
        f"ALTER TABLE audit_records ADD CONSTRAINT {CHECK}"
        " CHECK (data IS NOT NULL OR data_text IS NOT NULL) NOT VALID"
    )
    op.execute(f"ALTER TABLE audit_records VALIDATE CONSTRAINT {CHECK}")


def downgrade() -> None:
    op.execute(f"ALTER TABLE audit_records DROP CONSTRAINT {CHECK}")
    # The trail is append-only (a trigger refuses UPDATE): this one rewrite goes around it.
    op.execute("ALTER TABLE audit_records DISABLE TRIGGER audit_records_append_only")
    op.execute("UPDATE audit_records SET data = CAST(data_text AS jsonb) WHERE data IS NULL")
    op.execute("ALTER TABLE audit_records ENABLE TRIGGER audit_records_append_only")
    op.alter_column("audit_records", "data", nullable=False)
