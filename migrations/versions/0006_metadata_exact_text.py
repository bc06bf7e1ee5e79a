"""accounts and transfers keep their metadata as the client's text, beside the jsonb copy

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 20:00:00.000000

`metadata` (jsonb) reprints numbers: `1e308` comes out as 309 digits (a 16 KiB object in, about
850 KB out), `1e23` as `100000000000000000000000`, `-0.0` as `0.0`. So a same-id retry with the
same body was a conflict and responses carried numbers the client never sent. `metadata_text`
keeps the text as sent (without insignificant whitespace) and is what the API answers; the jsonb
column stays, written from that same text, for queries (metadata filters, a GIN index).

Existing rows are backfilled from the jsonb column: their original text is lost, so they keep
the text jsonb prints. The backfill updates every row once, with the guard triggers disabled
for it (they refuse any update of a final transfer or a closed account and any account update
that does not raise its version; this one changes neither money nor state). The table locks
of ADD COLUMN are held to the end, so no write can slip in while the guards are off.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GUARDS = {"accounts": "accounts_guard", "transfers": "transfers_guard"}


def upgrade() -> None:
    for table, guard in GUARDS.items():
        op.add_column(table, sa.Column("metadata_text", sa.Text(), nullable=True))
        op.execute(f"ALTER TABLE {table} DISABLE TRIGGER {guard}")
        op.execute(f"UPDATE {table} SET metadata_text = metadata::text")
        op.execute(f"ALTER TABLE {table} ENABLE TRIGGER {guard}")
        op.alter_column(table, "metadata_text", nullable=False)


def downgrade() -> None:
    # The jsonb column was written from the same text all along: nothing to copy back.
    for table in GUARDS:
        op.drop_column(table, "metadata_text")
