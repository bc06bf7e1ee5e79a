"""audit seals carry what their sealer pass knew about transaction ids, so a late seal is no alarm

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 12:00:00.000000

Verification used to call a record forged when an earlier sealer pass ran more than a minute
after the record's `at`: "a genuine record is visible as soon as it commits, and no transaction
runs a minute". An outage that cut a pass short, a backlog, or a transaction that waits made
that a permanent false alarm. Each seal now also keeps two facts of the pass that made it,
inside its hash: `horizon_xid` (every older transaction had ended before a pass that finished its
scan, so their records are all sealed) and `next_xid` (the snapshot's xmax: no transaction had an
id of this or more when the pass began, at `sealed_at`). Verification judges by those
(ledger/audit/verify.py). Seals made before this migration keep NULL in both, and their hash
is the one they were sealed with.

The index answers "the latest pass that ran before transaction X began" with one probe.
Adding NULL columns rewrites nothing, so the append-only triggers are not involved. A downgrade
drops the facts: seals made since then no longer verify under the older code (their hashes
cover the facts), so downgrade only a database whose chain you are prepared to reseal.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_seals", sa.Column("horizon_xid", sa.BigInteger(), nullable=True))
    op.add_column("audit_seals", sa.Column("next_xid", sa.BigInteger(), nullable=True))
    op.create_index("ix_audit_seals_next_xid_seq", "audit_seals", ["next_xid", "seq"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_seals_next_xid_seq", table_name="audit_seals")
    op.drop_column("audit_seals", "next_xid")
    op.drop_column("audit_seals", "horizon_xid")
