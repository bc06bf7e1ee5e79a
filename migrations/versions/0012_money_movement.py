"""money movement: exchanges, balancing and imported transfers, the period lock, balance monitors

Revision ID: 0012_money_movement
Revises: 0009
Create Date: 2026-11-29 23:00:00.000000

- `transfers.imported_at`: set on a transfer recorded after the fact (a migration from another
  ledger); its entries are posted at that instant. `transfers.amount_ceiling`: what a balancing
  transfer asked for at most (`amount` is what moved), kept to tell a repeated create from a
  different one.
- `exchanges`: one row per cross-currency exchange, naming its two legs. Both legs are foreign
  keys, so an exchange row cannot exist without both of its transfers; the row is insert-only.
- `period_locks`: every move of the period lock, insert-only; the lock is the latest
  `locked_until`. No entry may be posted at or before it: a statement trigger on `entries`
  refuses it, whatever code path wrote it; a row trigger refuses a move that is not forward.
  `entries_watermark` is the highest entry id when the lock moved (no posting was in flight):
  `ledger verify` checks that no later entry lies inside the period.
- `account_monitors`: balance monitors, evaluated by the posting engine on locked balances;
  `trigger_count` numbers each monitor's events (their CloudEvents sequence).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012_money_movement"
down_revision: str | None = "0011_reporting"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID = postgresql.UUID(as_uuid=True)
TIMESTAMP = sa.DateTime(timezone=True)

PERIOD_LOCK_ENTRIES = """
CREATE FUNCTION ledger_entries_period_lock() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.account_id, n.posted_at, p.locked_until INTO bad
      FROM new_entries n
      CROSS JOIN (SELECT max(locked_until) AS locked_until FROM period_locks) p
     WHERE n.posted_at <= p.locked_until
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entry of account % posted at % is inside the locked period (until %)',
            bad.account_id, bad.posted_at, bad.locked_until
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$
"""

PERIOD_LOCK_FORWARD = """
CREATE FUNCTION ledger_period_lock_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM period_locks WHERE locked_until >= NEW.locked_until) THEN
        RAISE EXCEPTION 'the period lock only moves forward'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$
"""


def upgrade() -> None:
    op.add_column("transfers", sa.Column("imported_at", TIMESTAMP, nullable=True))
    op.add_column("transfers", sa.Column("amount_ceiling", sa.BigInteger(), nullable=True))
    op.create_check_constraint(
        op.f("ck_transfers_amount_within_ceiling"),
        "transfers",
        "amount_ceiling IS NULL OR amount <= amount_ceiling",
    )
    op.create_table(
        "exchanges",
        sa.Column("id", UUID, nullable=False),
        sa.Column("debit_transfer_id", UUID, nullable=False),
        sa.Column("credit_transfer_id", UUID, nullable=False),
        sa.Column("rate", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "debit_transfer_id <> credit_transfer_id", name=op.f("ck_exchanges_two_legs")
        ),
        sa.CheckConstraint("rate ~ '^[0-9]+(\\.[0-9]+)?$'", name=op.f("ck_exchanges_rate_format")),
        sa.ForeignKeyConstraint(
            ["debit_transfer_id"],
            ["transfers.id"],
            name=op.f("fk_exchanges_debit_transfer_id_transfers"),
        ),
        sa.ForeignKeyConstraint(
            ["credit_transfer_id"],
            ["transfers.id"],
            name=op.f("fk_exchanges_credit_transfer_id_transfers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchanges")),
        sa.UniqueConstraint("debit_transfer_id", name=op.f("uq_exchanges_debit_transfer_id")),
        sa.UniqueConstraint("credit_transfer_id", name=op.f("uq_exchanges_credit_transfer_id")),
    )
    op.create_table(
        "period_locks",
        sa.Column("locked_until", TIMESTAMP, nullable=False),
        sa.Column("entries_watermark", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("locked_until", name=op.f("pk_period_locks")),
    )
    op.create_table(
        "account_monitors",
        sa.Column("id", UUID, nullable=False),
        sa.Column("account_id", UUID, nullable=False),
        sa.Column("field", sa.String(9), nullable=False),
        sa.Column("operator", sa.String(3), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("trigger_count", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "field IN ('posted', 'available')", name=op.f("ck_account_monitors_field")
        ),
        sa.CheckConstraint(
            "operator IN ('lt', 'lte', 'gt', 'gte')", name=op.f("ck_account_monitors_operator")
        ),
        sa.CheckConstraint(
            "trigger_count >= 0", name=op.f("ck_account_monitors_trigger_count_nonnegative")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_monitors_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_monitors")),
    )
    op.create_index(
        op.f("ix_account_monitors_account_id_id"), "account_monitors", ["account_id", "id"]
    )
    op.execute(PERIOD_LOCK_ENTRIES)
    op.execute(
        "CREATE TRIGGER entries_period_lock AFTER INSERT ON entries "
        "REFERENCING NEW TABLE AS new_entries "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_period_lock()"
    )
    op.execute(PERIOD_LOCK_FORWARD)
    op.execute(
        "CREATE TRIGGER period_locks_forward BEFORE INSERT ON period_locks "
        "FOR EACH ROW EXECUTE FUNCTION ledger_period_lock_forward()"
    )
    for table in ("exchanges", "period_locks"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change()"
        )
    for table in ("exchanges", "period_locks"):
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change()"
        )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS entries_period_lock ON entries")
    op.execute("DROP FUNCTION IF EXISTS ledger_entries_period_lock()")
    op.drop_table("account_monitors")
    op.drop_table("period_locks")
    op.execute("DROP FUNCTION IF EXISTS ledger_period_lock_forward()")
    op.drop_table("exchanges")
    op.drop_constraint(op.f("ck_transfers_amount_within_ceiling"), "transfers", type_="check")
    op.drop_column("transfers", "amount_ceiling")
    op.drop_column("transfers", "imported_at")
