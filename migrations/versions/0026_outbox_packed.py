"""outbox envelopes stored packed: deflate against a fixed dictionary, a quarter of the bytes

Revision ID: 0026_outbox_packed
Revises: 0025_wal_indexes
Create Date: 2026-12-07 16:30:00.000000

An envelope is 600 to 900 bytes of text, most of it what every envelope says (keys, the event
type, `application/json`), and PostgreSQL compresses nothing in a row under about 2 KB. Three
of them per transfer were the largest part of its WAL. The writer now packs the text it
encoded (ledger/core/packed.py) into `envelope_packed` (bytea); the relay and the feed unpack
it and send the same bytes as before. Rows written before keep their text in `envelope`, which
becomes nullable; exactly one of the two is set.

Order: migrate, then deploy. The code before this migration reads only `envelope`: an old
relay that meets a packed row fails its step (it never sends an empty value) until the new
worker takes over, so stop old workers with the upgrade. The downgrade unpacks every packed
row back into `envelope`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ledger.core.packed import unpack

revision: str = "0026_outbox_packed"
down_revision: str | None = "0025_wal_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = "ck_outbox_events_one_envelope"
DOWNGRADE_BATCH = 5_000


def upgrade() -> None:
    op.add_column("outbox_events", sa.Column("envelope_packed", sa.LargeBinary(), nullable=True))
    op.alter_column("outbox_events", "envelope", nullable=True)
    # Every existing row has its text: the check holds for them; NOT VALID then VALIDATE reads
    # the table without holding off writes for the read.
    op.execute(
        f"ALTER TABLE outbox_events ADD CONSTRAINT {CHECK}"
        " CHECK (num_nonnulls(envelope, envelope_packed) = 1) NOT VALID"
    )
    op.execute(f"ALTER TABLE outbox_events VALIDATE CONSTRAINT {CHECK}")


def downgrade() -> None:
    bind = op.get_bind()
    op.execute(f"ALTER TABLE outbox_events DROP CONSTRAINT {CHECK}")
    after = 0
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT id, envelope_packed FROM outbox_events"
                " WHERE id > :after AND envelope_packed IS NOT NULL ORDER BY id LIMIT :n"
            ),
            {"after": after, "n": DOWNGRADE_BATCH},
        ).all()
        if not rows:
            break
        bind.execute(
            sa.text(
                "UPDATE outbox_events SET envelope = CAST(:text AS json), envelope_packed = NULL"
                " WHERE id = :id"
            ),
            [{"id": r.id, "text": unpack(r.envelope_packed).decode()} for r in rows],
        )
        after = rows[-1].id
    op.drop_column("outbox_events", "envelope_packed")
    op.alter_column("outbox_events", "envelope", nullable=False)
