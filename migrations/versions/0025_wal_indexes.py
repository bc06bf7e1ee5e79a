"""fewer index writes per transfer: the reversal index keeps only reversals, and the metadata
GIN index writes its entries directly instead of through a pending list

Revision ID: 0025_wal_indexes
Revises: 0023_wal_lean
Create Date: 2026-12-07 06:20:00.000000

- `ix_transfers_reversal_of` indexed the NULL of every transfer that reverses nothing: one index
  entry per transfer for no read. Every query that uses it asks for `reversal_of = <id>` (the
  reversed total of a transfer in `ledger verify`, the foreign key's own check), which implies
  `reversal_of IS NOT NULL`, so the partial index serves them all and holds only reversals.
- `ix_transfers_metadata` (GIN) had `fastupdate` on: every insert appended to the pending list
  and rewrote the index's meta page, even for `{}` (about 166 bytes of WAL per transfer), and a
  later cleanup moved the entries again. With it off an insert goes straight into the tree.
  The filter reads the same index either way (no pending list to scan now).
- `outbox_events.traceparent` repeated the envelope's `traceparent` (about 56 bytes in each of
  a transfer's three events): the relay reads it from the envelope now. The code that no longer
  writes it runs on the schema before this migration too: deploy it first, then migrate. The
  downgrade fills the column back from the envelopes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025_wal_indexes"
down_revision: str | None = "0023_wal_lean"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REVERSAL_INDEX = "ix_transfers_reversal_of"
BUILDING = "ix_transfers_reversal_of_next"
METADATA_INDEX = "ix_transfers_metadata"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # The partial index is built beside the old one, so lookups always have one.
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {BUILDING} ON transfers (reversal_of)"
            " WHERE reversal_of IS NOT NULL"
        )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {REVERSAL_INDEX}")
    op.execute(f"ALTER INDEX {BUILDING} RENAME TO {REVERSAL_INDEX}")
    # Later inserts go into the tree; what the pending list holds is flushed into it now.
    op.execute(f"ALTER INDEX {METADATA_INDEX} SET (fastupdate = off)")
    op.execute(f"SELECT gin_clean_pending_list('{METADATA_INDEX}'::regclass)")
    op.drop_column("outbox_events", "traceparent")


def downgrade() -> None:
    op.add_column("outbox_events", sa.Column("traceparent", sa.Text(), nullable=True))
    op.execute("UPDATE outbox_events SET traceparent = envelope ->> 'traceparent'")
    op.execute(f"ALTER INDEX {METADATA_INDEX} RESET (fastupdate)")
    with op.get_context().autocommit_block():
        op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {BUILDING} ON transfers (reversal_of)")
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {REVERSAL_INDEX}")
    op.execute(f"ALTER INDEX {BUILDING} RENAME TO {REVERSAL_INDEX}")
