"""initial schema: tables, money constraints and the triggers that guard them

Revision ID: 0001
Revises:
Create Date: 2026-11-26 08:40:13.016779
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Rules a bug in Python must not be able to break. They hold for every role, the table owner
# included; only a superuser's `SET session_replication_role = replica` switches them off, and
# `ledger verify` / `ledger audit verify` catch what is done that way.
GUARDS_UP = [
    """
    CREATE FUNCTION ledger_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% on % is not allowed: the table is append-only', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE FUNCTION ledger_accounts_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.id <> OLD.id OR NEW.code <> OLD.code OR NEW.currency <> OLD.currency
           OR NEW.normal_balance <> OLD.normal_balance OR NEW.created_at <> OLD.created_at THEN
            RAISE EXCEPTION 'account % identity columns are immutable', OLD.id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF OLD.status = 'closed' THEN
            RAISE EXCEPTION 'account % is closed', OLD.id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF NEW.version <= OLD.version THEN
            RAISE EXCEPTION 'account % version must grow (% -> %)', OLD.id, OLD.version, NEW.version
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE FUNCTION ledger_transfers_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.id <> OLD.id OR NEW.debit_account_id <> OLD.debit_account_id
           OR NEW.credit_account_id <> OLD.credit_account_id OR NEW.amount <> OLD.amount
           OR NEW.currency <> OLD.currency OR NEW.created_at <> OLD.created_at
           OR NEW.reversal_of IS DISTINCT FROM OLD.reversal_of THEN
            RAISE EXCEPTION 'transfer % identity columns are immutable', OLD.id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF OLD.state IN ('voided', 'expired') THEN
            RAISE EXCEPTION 'transfer % is final (%)', OLD.id, OLD.state
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF OLD.state = 'posted' AND (NEW.state <> 'posted'
           OR NEW.posted_amount <> OLD.posted_amount
           OR NEW.reversed_amount < OLD.reversed_amount) THEN
            RAISE EXCEPTION 'posted transfer % may only gain reversals', OLD.id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$
    """,
    # Double entry, checked at commit for every transfer that gained entries: debits equal
    # credits equal the posted amount, and every leg is in the transfer's currency.
    """
    CREATE FUNCTION ledger_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        debits numeric;
        credits numeric;
        foreign_legs bigint;
        t transfers%ROWTYPE;
    BEGIN
        SELECT * INTO t FROM transfers WHERE id = NEW.transfer_id;
        SELECT coalesce(sum(e.amount) FILTER (WHERE e.direction = 'debit'), 0),
               coalesce(sum(e.amount) FILTER (WHERE e.direction = 'credit'), 0),
               count(*) FILTER (WHERE a.currency <> t.currency)
          INTO debits, credits, foreign_legs
          FROM entries e JOIN accounts a ON a.id = e.account_id
         WHERE e.transfer_id = NEW.transfer_id;
        IF debits <> credits OR debits <> t.posted_amount OR foreign_legs > 0 THEN
            RAISE EXCEPTION 'transfer % is unbalanced: debits %, credits %, posted %',
                NEW.transfer_id, debits, credits, t.posted_amount
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_entries_balanced()
    """,
    "CREATE TRIGGER accounts_guard BEFORE UPDATE ON accounts "
    "FOR EACH ROW EXECUTE FUNCTION ledger_accounts_guard()",
    "CREATE TRIGGER transfers_guard BEFORE UPDATE ON transfers "
    "FOR EACH ROW EXECUTE FUNCTION ledger_transfers_guard()",
    *[
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change()"
        for table in ("entries", "audit_records", "audit_seals")
    ],
    *[
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change()"
        for table in ("accounts", "transfers", "voided_transfer_ids")
    ],
    *[
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change()"
        for table in (
            "accounts",
            "transfers",
            "entries",
            "voided_transfer_ids",
            "audit_records",
            "audit_seals",
        )
    ],
]

GUARDS_DOWN = [
    *[
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"
        for table in (
            "accounts",
            "transfers",
            "entries",
            "voided_transfer_ids",
            "audit_records",
            "audit_seals",
        )
    ],
    *[
        f"DROP TRIGGER IF EXISTS {table}_no_delete ON {table}"
        for table in ("accounts", "transfers", "voided_transfer_ids")
    ],
    *[
        f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"
        for table in ("entries", "audit_records", "audit_seals")
    ],
    "DROP TRIGGER IF EXISTS transfers_guard ON transfers",
    "DROP TRIGGER IF EXISTS accounts_guard ON accounts",
    "DROP TRIGGER IF EXISTS entries_balanced ON entries",
    "DROP FUNCTION IF EXISTS ledger_entries_balanced()",
    "DROP FUNCTION IF EXISTS ledger_transfers_guard()",
    "DROP FUNCTION IF EXISTS ledger_accounts_guard()",
    "DROP FUNCTION IF EXISTS ledger_forbid_change()",
]


def upgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    op.create_table(
        "accounts",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("code", sa.String(length=128), nullable=False),
        sa.Column("currency", sa.String(length=12), nullable=False),
        sa.Column("normal_balance", sa.String(length=6), nullable=False),
        sa.Column("min_balance", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("posted_debits", sa.BigInteger(), nullable=False),
        sa.Column("posted_credits", sa.BigInteger(), nullable=False),
        sa.Column("pending_debits", sa.BigInteger(), nullable=False),
        sa.Column("pending_credits", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "code ~ '^[A-Za-z0-9:._-]{1,128}$'", name=op.f("ck_accounts_code_format")
        ),
        sa.CheckConstraint(
            "currency ~ '^[A-Z0-9]{3,12}$'", name=op.f("ck_accounts_currency_format")
        ),
        sa.CheckConstraint(
            "min_balance IS NULL OR (CASE normal_balance WHEN 'credit' THEN posted_credits::numeric - posted_debits - pending_debits ELSE posted_debits::numeric - posted_credits - pending_credits END) >= min_balance",
            name=op.f("ck_accounts_floor"),
        ),
        sa.CheckConstraint(
            "normal_balance IN ('debit', 'credit')", name=op.f("ck_accounts_normal_balance")
        ),
        sa.CheckConstraint(
            "status <> 'closed' OR (posted_debits = posted_credits AND pending_debits = 0 AND pending_credits = 0)",
            name=op.f("ck_accounts_closed_is_empty"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'frozen', 'closed')", name=op.f("ck_accounts_status")
        ),
        sa.CheckConstraint(
            "posted_debits >= 0 AND posted_credits >= 0 AND pending_debits >= 0 AND pending_credits >= 0",
            name=op.f("ck_accounts_balances_nonnegative"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_accounts_version_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("code", name=op.f("uq_accounts_code")),
    )
    op.create_index(
        "ix_accounts_currency_status_id", "accounts", ["currency", "status", "id"], unique=False
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('admin', 'operator', 'reader', 'auditor')", name=op.f("ck_api_keys_role")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_api_keys_secret_hash")),
    )
    op.create_table(
        "audit_records",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.UUID(), nullable=True),
        sa.Column("actor_name", sa.Text(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("trace_id", sa.Text(), nullable=True),
        sa.Column("client_addr", sa.Text(), nullable=True),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_records")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_records_seq")),
    )
    op.create_index(
        "ix_audit_records_actor_id_seq", "audit_records", ["actor_id", "seq"], unique=False
    )
    op.create_index("ix_audit_records_at", "audit_records", ["at"], unique=False)
    op.create_index(
        "ix_audit_records_object_id_seq", "audit_records", ["object_id", "seq"], unique=False
    )
    op.create_table(
        "audit_seals",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("record_id", sa.UUID(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_seals")),
        sa.UniqueConstraint("record_id", name=op.f("uq_audit_seals_record_id")),
    )
    op.create_table(
        "consumer_balances",
        sa.Column("group_id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("posted_debits", sa.BigInteger(), nullable=False),
        sa.Column("posted_credits", sa.BigInteger(), nullable=False),
        sa.Column("pending_debits", sa.BigInteger(), nullable=False),
        sa.Column("pending_credits", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "account_id", name=op.f("pk_consumer_balances")),
    )
    op.create_table(
        "consumer_inbox",
        sa.Column("group_id", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "event_id", name=op.f("pk_consumer_inbox")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("principal_id", sa.UUID(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        "ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"], unique=False
    )
    op.create_table(
        "outbox_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=True),
        sa.Column("envelope", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("traceparent", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_events_event_id")),
        sa.UniqueConstraint("position", name=op.f("uq_outbox_events_position")),
    )
    op.create_index(
        "ix_outbox_events_unpublished",
        "outbox_events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("position IS NULL"),
    )
    op.create_table(
        "voided_transfer_ids",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voided_transfer_ids")),
    )
    op.create_table(
        "transfers",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("debit_account_id", sa.UUID(), nullable=False),
        sa.Column("credit_account_id", sa.UUID(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=12), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("posted_amount", sa.BigInteger(), nullable=False),
        sa.Column("reversed_amount", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("timeout_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reversal_of", sa.UUID(), nullable=True),
        sa.Column("created_pending", sa.Boolean(), nullable=False),
        sa.Column("timeout_seconds", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(state = 'posted') = (posted_amount > 0)",
            name=op.f("ck_transfers_posted_iff_posted_amount"),
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'posted', 'voided', 'expired')", name=op.f("ck_transfers_state")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_transfers_amount_positive")),
        sa.CheckConstraint(
            "debit_account_id <> credit_account_id", name=op.f("ck_transfers_distinct_accounts")
        ),
        sa.CheckConstraint(
            "posted_amount >= 0 AND posted_amount <= amount",
            name=op.f("ck_transfers_posted_within_amount"),
        ),
        sa.CheckConstraint(
            "reversed_amount >= 0 AND reversed_amount <= posted_amount",
            name=op.f("ck_transfers_reversed_within_posted"),
        ),
        sa.ForeignKeyConstraint(
            ["credit_account_id"],
            ["accounts.id"],
            name=op.f("fk_transfers_credit_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["debit_account_id"],
            ["accounts.id"],
            name=op.f("fk_transfers_debit_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["reversal_of"], ["transfers.id"], name=op.f("fk_transfers_reversal_of_transfers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfers")),
    )
    op.create_index(
        "ix_transfers_credit_account_id_id", "transfers", ["credit_account_id", "id"], unique=False
    )
    op.create_index(
        "ix_transfers_debit_account_id_id", "transfers", ["debit_account_id", "id"], unique=False
    )
    op.create_index(
        "ix_transfers_pending_timeout",
        "transfers",
        ["timeout_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending' AND timeout_at IS NOT NULL"),
    )
    op.create_index("ix_transfers_reversal_of", "transfers", ["reversal_of"], unique=False)
    op.create_index("ix_transfers_state_id", "transfers", ["state", "id"], unique=False)
    op.create_table(
        "entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("transfer_id", sa.UUID(), nullable=False),
        sa.Column("direction", sa.String(length=6), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("direction IN ('debit', 'credit')", name=op.f("ck_entries_direction")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_entries_amount_positive")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_entries_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["transfer_id"], ["transfers.id"], name=op.f("fk_entries_transfer_id_transfers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entries")),
        sa.UniqueConstraint("account_id", "sequence", name=op.f("uq_entries_account_id_sequence")),
    )
    op.create_index(
        "ix_entries_account_id_posted_at", "entries", ["account_id", "posted_at"], unique=False
    )
    op.create_index("ix_entries_transfer_id", "entries", ["transfer_id"], unique=False)
    # ### end Alembic commands ###
    for statement in GUARDS_UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in GUARDS_DOWN:
        op.execute(statement)
    # ### commands auto generated by Alembic - please adjust! ###
    op.drop_index("ix_entries_transfer_id", table_name="entries")
    op.drop_index("ix_entries_account_id_posted_at", table_name="entries")
    op.drop_table("entries")
    op.drop_index("ix_transfers_state_id", table_name="transfers")
    op.drop_index("ix_transfers_reversal_of", table_name="transfers")
    op.drop_index(
        "ix_transfers_pending_timeout",
        table_name="transfers",
        postgresql_where=sa.text("state = 'pending' AND timeout_at IS NOT NULL"),
    )
    op.drop_index("ix_transfers_debit_account_id_id", table_name="transfers")
    op.drop_index("ix_transfers_credit_account_id_id", table_name="transfers")
    op.drop_table("transfers")
    op.drop_table("voided_transfer_ids")
    op.drop_index(
        "ix_outbox_events_unpublished",
        table_name="outbox_events",
        postgresql_where=sa.text("position IS NULL"),
    )
    op.drop_table("outbox_events")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("consumer_inbox")
    op.drop_table("consumer_balances")
    op.drop_table("audit_seals")
    op.drop_index("ix_audit_records_object_id_seq", table_name="audit_records")
    op.drop_index("ix_audit_records_at", table_name="audit_records")
    op.drop_index("ix_audit_records_actor_id_seq", table_name="audit_records")
    op.drop_table("audit_records")
    op.drop_table("api_keys")
    op.drop_index("ix_accounts_currency_status_id", table_name="accounts")
    op.drop_table("accounts")
    # ### end Alembic commands ###
