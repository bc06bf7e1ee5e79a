"""outbox rows are written once: the relay records one batch row per step instead of rewriting
each event with its feed position

Revision ID: 0023_wal_lean
Revises: 0022_verify_marks
Create Date: 2026-12-07 05:00:00.000000

The relay's mark was an UPDATE of every event it published (position, published_at): a second
copy of each envelope in the WAL and a new entry in each of the table's indexes, about half of
what a transfer wrote. Now an event row is never touched after its insert. Each relay step
inserts one `outbox_batches` row: the first feed position it hands out, the event ids it
published in feed order (position = first_position + index), its time, and the window of
commits it took them from (outbox/repository.py). `outbox_feed` is the per-event view of it.

Events carry their transaction id (`xact_id`, like audit records), which is how the relay finds
what committed since its last window; the index on it replaces the partial index of unpublished
ids, and the unique indexes on `position` and `event_id` go (no read uses them: the feed reads
positions from the batches, and event ids are UUIDv7 the writer makes).

Rows already published become batch rows of at most 1,000 events in position order, with
`xact_id` 1. Unpublished rows get `xact_id` 2 and the last batch's window ends at the snapshot
`2:2:` (xid 1 committed, 2 not): the relay's next window takes exactly them, then everything
after. The downgrade writes positions back into the rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0023_wal_lean"
down_revision: str | None = "0022_verify_marks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MIGRATED_BATCH = 1_000
# Ids beyond any row: the cursor of a window that is finished.
WINDOW_DONE = 9_223_372_036_854_775_807

FEED_VIEW = """
CREATE VIEW outbox_feed AS
SELECT b.first_position + o.ord - 1 AS position, o.id, b.published_at
FROM outbox_batches AS b
CROSS JOIN LATERAL unnest(b.event_ids) WITH ORDINALITY AS o(id, ord)
"""


def upgrade() -> None:
    op.create_table(
        "outbox_batches",
        sa.Column("first_position", sa.BigInteger(), nullable=False),
        sa.Column("event_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_low", sa.Text(), nullable=False),
        sa.Column("window_high", sa.Text(), nullable=False),
        sa.Column("window_after_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("first_position", name="pk_outbox_batches"),
        sa.CheckConstraint(
            "first_position > 0 AND cardinality(event_ids) > 0",
            name=op.f("ck_outbox_batches_not_empty"),
        ),
    )
    op.add_column(
        "outbox_events",
        sa.Column(
            "xact_id",
            sa.BigInteger(),
            nullable=False,
            # Published rows: their transactions are long over, and the windows took them. A
            # constant default is stored once in the catalog, not written into every row.
            server_default=sa.text("1"),
        ),
    )
    # The few rows the old relay had not published yet.
    op.execute("UPDATE outbox_events SET xact_id = 2 WHERE position IS NULL")
    op.execute(
        f"""
        INSERT INTO outbox_batches (first_position, event_ids, published_at, window_low,
                                    window_high, window_after_id)
        SELECT min(position), array_agg(id ORDER BY position), max(published_at), '1:1:',
               '2:2:', {WINDOW_DONE}
        FROM outbox_events
        WHERE position IS NOT NULL
        GROUP BY (position - 1) / {MIGRATED_BATCH}
        """
    )
    op.alter_column(
        "outbox_events",
        "xact_id",
        server_default=sa.text("(pg_current_xact_id()::text)::bigint"),
    )
    op.drop_index("ix_outbox_events_unpublished", table_name="outbox_events")
    op.drop_constraint("uq_outbox_events_position", "outbox_events", type_="unique")
    op.drop_constraint("uq_outbox_events_event_id", "outbox_events", type_="unique")
    op.drop_column("outbox_events", "position")
    op.drop_column("outbox_events", "published_at")
    op.create_index("ix_outbox_events_xact_id", "outbox_events", ["xact_id"])
    op.execute(FEED_VIEW)


def downgrade() -> None:
    op.add_column("outbox_events", sa.Column("position", sa.BigInteger(), nullable=True))
    op.add_column(
        "outbox_events",
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute(
        """
        UPDATE outbox_events AS e SET position = f.position, published_at = f.published_at
        FROM outbox_feed AS f WHERE f.id = e.id
        """
    )
    op.execute("DROP VIEW outbox_feed")
    op.drop_index("ix_outbox_events_xact_id", table_name="outbox_events")
    op.drop_column("outbox_events", "xact_id")
    op.drop_table("outbox_batches")
    op.create_unique_constraint("uq_outbox_events_event_id", "outbox_events", ["event_id"])
    op.create_unique_constraint("uq_outbox_events_position", "outbox_events", ["position"])
    op.create_index(
        "ix_outbox_events_unpublished",
        "outbox_events",
        ["id"],
        postgresql_where=sa.text("position IS NULL"),
    )
