"""reporting: balances after each transfer, metadata indexes, account categories

Revision ID: 0011_reporting
Revises: 0009
Create Date: 2026-11-29 23:00:00.000000

- `transfers.balances_after`: both accounts' balances right after the transfer's last change,
  twelve integers (debit account: posted, available, posted_debits, posted_credits,
  pending_debits, pending_credits; then the credit account's), written by the posting engine
  from the locked state it decided on. Transfers written before this migration keep NULL.
- GIN indexes (`jsonb_path_ops`) on the jsonb metadata copies of accounts and transfers, for
  `metadata[KEY]=VALUE` filters by containment (`@>`).
- `categories` (a tree by `parent_id`) and `category_accounts` (membership; an account may be in
  several categories). Triggers refuse what the service also refuses: a cycle, a parent or an
  account in another currency, a change of a category's identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011_reporting"
down_revision: str | None = "0010_audit_merkle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BALANCES_AFTER_WIDTH = 12  # six balances per account, two accounts

FUNCTIONS = [
    """
    CREATE FUNCTION ledger_categories_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        parent categories%ROWTYPE;
        cursor_id uuid;
        steps integer := 0;
    BEGIN
        IF TG_OP = 'UPDATE' AND (NEW.id <> OLD.id OR NEW.code <> OLD.code
           OR NEW.currency <> OLD.currency OR NEW.normal_balance <> OLD.normal_balance
           OR NEW.created_at <> OLD.created_at) THEN
            RAISE EXCEPTION 'category % identity columns are immutable', OLD.id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF NEW.parent_id IS NULL THEN
            RETURN NEW;
        END IF;
        SELECT * INTO parent FROM categories WHERE id = NEW.parent_id;
        IF parent.currency <> NEW.currency THEN
            RAISE EXCEPTION 'category % and its parent % differ in currency', NEW.id, parent.id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        cursor_id := NEW.parent_id;
        WHILE cursor_id IS NOT NULL LOOP
            IF cursor_id = NEW.id THEN
                RAISE EXCEPTION 'category % would be its own ancestor', NEW.id
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            steps := steps + 1;
            IF steps > 10000 THEN
                RAISE EXCEPTION 'category % has too deep an ancestry', NEW.id
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            SELECT c.parent_id INTO cursor_id FROM categories c WHERE c.id = cursor_id;
        END LOOP;
        RETURN NEW;
    END $$
    """,
    """
    CREATE FUNCTION ledger_category_accounts_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF (SELECT currency FROM categories WHERE id = NEW.category_id)
           IS DISTINCT FROM (SELECT currency FROM accounts WHERE id = NEW.account_id) THEN
            RAISE EXCEPTION 'account % is not in the currency of category %',
                NEW.account_id, NEW.category_id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$
    """,
]

TRIGGERS = [
    "CREATE TRIGGER categories_guard BEFORE INSERT OR UPDATE ON categories "
    "FOR EACH ROW EXECUTE FUNCTION ledger_categories_guard()",
    "CREATE TRIGGER category_accounts_guard BEFORE INSERT OR UPDATE ON category_accounts "
    "FOR EACH ROW EXECUTE FUNCTION ledger_category_accounts_guard()",
]


def upgrade() -> None:
    op.add_column(
        "transfers",
        sa.Column("balances_after", postgresql.ARRAY(sa.BigInteger()), nullable=True),
    )
    op.create_check_constraint(
        op.f("ck_transfers_balances_after_shape"),
        "transfers",
        f"balances_after IS NULL OR cardinality(balances_after) = {BALANCES_AFTER_WIDTH}",
    )
    for table in ("accounts", "transfers"):
        op.create_index(
            f"ix_{table}_metadata",
            table,
            ["metadata"],
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        )
    op.create_table(
        "categories",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("code", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(12), nullable=False),
        sa.Column("normal_balance", sa.String(6), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("metadata_text", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["categories.id"], name=op.f("fk_categories_parent_id_categories")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_categories")),
        sa.UniqueConstraint("code", name=op.f("uq_categories_code")),
        sa.CheckConstraint(
            "normal_balance IN ('debit', 'credit')", name=op.f("ck_categories_normal_balance")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_categories_version_positive")),
        sa.CheckConstraint(
            "parent_id IS NULL OR parent_id <> id", name=op.f("ck_categories_not_own_parent")
        ),
        sa.CheckConstraint(
            "currency ~ '^[A-Z0-9]{3,12}$'", name=op.f("ck_categories_currency_format")
        ),
        sa.CheckConstraint(
            "code ~ '^[A-Za-z0-9:._-]{1,128}$'", name=op.f("ck_categories_code_format")
        ),
    )
    op.create_index("ix_categories_parent_id_id", "categories", ["parent_id", "id"])
    op.create_table(
        "category_accounts",
        sa.Column("category_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["category_id"],
            ["categories.id"],
            name=op.f("fk_category_accounts_category_id_categories"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_category_accounts_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("category_id", "account_id", name=op.f("pk_category_accounts")),
    )
    op.create_index("ix_category_accounts_account_id", "category_accounts", ["account_id"])
    for statement in FUNCTIONS + TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS category_accounts_guard ON category_accounts")
    op.execute("DROP TRIGGER IF EXISTS categories_guard ON categories")
    op.drop_table("category_accounts")
    op.drop_table("categories")
    op.execute("DROP FUNCTION IF EXISTS ledger_category_accounts_guard()")
    op.execute("DROP FUNCTION IF EXISTS ledger_categories_guard()")
    for table in ("accounts", "transfers"):
        op.drop_index(f"ix_{table}_metadata", table_name=table)
    op.drop_constraint(op.f("ck_transfers_balances_after_shape"), "transfers", type_="check")
    op.drop_column("transfers", "balances_after")
