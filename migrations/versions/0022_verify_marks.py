"""verify marks: what `ledger verify --since-last` carries forward from the last run

Revision ID: 0022_verify_marks
Revises: 0021_growth_reads
Create Date: 2026-12-07 05:00:00.000000

Each successful `ledger verify` records its bounds (`verify_runs`) and, per account and per
balance monitor, how far it checked (`verify_account_marks`, `verify_monitor_marks`). The
incremental run reads only entries and events beyond them, and first checks the marks against
the data they describe. No foreign keys: a mark is evidence about the data, checked by the
verifier itself, never a constraint on the ledger's own writes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

UUID = postgresql.UUID(as_uuid=True)

revision: str = "0022_verify_marks"
down_revision: str | None = "0021_growth_reads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "verify_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("kind", sa.String(length=11), nullable=False),
        sa.Column("full_run_id", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entries_settled", sa.BigInteger(), nullable=False),
        sa.Column("entries_seen", sa.BigInteger(), nullable=False),
        sa.Column("events_settled", sa.BigInteger(), nullable=False),
        sa.Column("entries_checked", sa.BigInteger(), nullable=False),
        sa.Column("transfers_checked", sa.BigInteger(), nullable=False),
        sa.Column("events_checked", sa.BigInteger(), nullable=False),
        sa.Column("accounts_checked", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("kind IN ('full', 'incremental')", name=op.f("ck_verify_runs_kind")),
        sa.CheckConstraint("full_run_id <= id", name=op.f("ck_verify_runs_full_run_before")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verify_runs")),
    )
    op.create_table(
        "verify_account_marks",
        sa.Column("account_id", UUID, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("entry_sequence", sa.BigInteger(), nullable=False),
        sa.Column("posted_debits", sa.BigInteger(), nullable=False),
        sa.Column("posted_credits", sa.BigInteger(), nullable=False),
        sa.Column("last_posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_verify_account_marks")),
    )
    op.create_table(
        "verify_monitor_marks",
        sa.Column("monitor_id", UUID, nullable=False),
        sa.Column("trigger_count", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("monitor_id", name=op.f("pk_verify_monitor_marks")),
    )


def downgrade() -> None:
    op.drop_table("verify_monitor_marks")
    op.drop_table("verify_account_marks")
    op.drop_table("verify_runs")
