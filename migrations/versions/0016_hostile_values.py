"""hostile values: a secret for client-id lock keys, reports that read by entry, stated bounds

Revision ID: 0016_hostile_values
Revises: 0015_audit_trust
Create Date: 2026-12-07 01:00:00.000000

- `lock_key_secret`: one row, 32 bytes from PostgreSQL's strong random source (two v4 UUIDs,
  244 random bits, through SHA-256). A client id's advisory lock key is the first 64 bits of
  SHA-256(secret || kind || id), computed in the database (`ledger.core.locks`): no client can
  choose an id whose lock is another's. The row never changes (a trigger refuses UPDATE and
  DELETE): in-flight transactions of every process must hash alike.
- `ix_entries_account_id_posted_at_sequence` replaces `ix_entries_account_id_posted_at`: "the
  last entry at or before T" of an account is then one index probe, however many entries share
  a `posted_at` (a group-commit batch, an import), for `balance?as_of`, the trial balance and
  category balances as of an instant. Built concurrently (writes go on meanwhile); it serves
  every query the old one did (its first two columns are the old one).
- Bounds behind the service's own checks (`ledger.core.limits`), for writes that do not go
  through it: at most 100 monitors per account (counted under the account's row lock), and a
  category tree at most 100 levels deep (the categories guard counts the new row's ancestry and,
  when it moves, the levels of its subtree). Existing rows are not checked: trees made before
  keep reading as they are, within the old 10,000-level walk.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_hostile_values"
down_revision: str | None = "0015_audit_trust"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOCK_SECRET_BYTES = 32

MONITORS_PER_ACCOUNT_MAX = 100
CATEGORY_LEVELS_MAX = 100
OLD_CATEGORY_WALK_MAX = 10000  # 0011's ancestry bound, kept for the downgrade

CATEGORIES_GUARD = """
    CREATE OR REPLACE FUNCTION ledger_categories_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        parent categories%ROWTYPE;
        cursor_id uuid;
        steps integer := 0;
        height integer := 1;
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
        IF TG_OP = 'UPDATE' AND NEW.parent_id IS NOT DISTINCT FROM OLD.parent_id THEN
            RETURN NEW;  -- not a move: the tree's shape is as it was
        END IF;
        cursor_id := NEW.parent_id;
        WHILE cursor_id IS NOT NULL LOOP
            IF cursor_id = NEW.id THEN
                RAISE EXCEPTION 'category % would be its own ancestor', NEW.id
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            steps := steps + 1;
            IF steps >= {levels} THEN
                RAISE EXCEPTION 'category % would be more than {levels} levels deep', NEW.id
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            SELECT c.parent_id INTO cursor_id FROM categories c WHERE c.id = cursor_id;
        END LOOP;
        IF TG_OP = 'UPDATE' THEN
            WITH RECURSIVE below(id, level) AS (
                SELECT NEW.id, 1
                UNION ALL
                SELECT c.id, b.level + 1 FROM categories c JOIN below b ON c.parent_id = b.id
                 WHERE b.level <= {levels}
            )
            SELECT max(level) INTO height FROM below;
        END IF;
        IF steps + height > {levels} THEN
            RAISE EXCEPTION 'category % would be more than {levels} levels deep', NEW.id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$
"""

MONITORS_GUARD = f"""
    CREATE FUNCTION ledger_account_monitors_bound() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM 1 FROM accounts WHERE id = NEW.account_id FOR UPDATE;
        IF (SELECT count(*) FROM account_monitors WHERE account_id = NEW.account_id)
           >= {MONITORS_PER_ACCOUNT_MAX} THEN
            RAISE EXCEPTION 'account % has {MONITORS_PER_ACCOUNT_MAX} monitors already',
                NEW.account_id USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$
"""

FUNCTIONS = [
    CATEGORIES_GUARD.replace("{levels}", str(CATEGORY_LEVELS_MAX)),
    MONITORS_GUARD,
    """
    CREATE FUNCTION ledger_lock_key_secret_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the lock key secret never changes'
            USING ERRCODE = 'integrity_constraint_violation';
    END $$
    """,
]
TRIGGERS = [
    "CREATE TRIGGER lock_key_secret_guard BEFORE UPDATE OR DELETE ON lock_key_secret "
    "FOR EACH ROW EXECUTE FUNCTION ledger_lock_key_secret_guard()",
    "CREATE TRIGGER account_monitors_bound BEFORE INSERT ON account_monitors "
    "FOR EACH ROW EXECUTE FUNCTION ledger_account_monitors_bound()",
]


NEW_INDEX = "ix_entries_account_id_posted_at_sequence"
OLD_INDEX = "ix_entries_account_id_posted_at"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {NEW_INDEX} "
            "ON entries (account_id, posted_at, sequence)"
        )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {OLD_INDEX}")
    op.create_table(
        "lock_key_secret",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_lock_key_secret_single_row")),
        sa.CheckConstraint(
            f"length(secret) = {LOCK_SECRET_BYTES}", name=op.f("ck_lock_key_secret_length")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lock_key_secret")),
    )
    op.execute(
        "INSERT INTO lock_key_secret (id, secret) "
        "SELECT 1, sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8'))"
    )
    for statement in FUNCTIONS + TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER account_monitors_bound ON account_monitors")
    op.execute("DROP FUNCTION ledger_account_monitors_bound()")
    # 0011's guard again: the same checks, its ancestry walk bounded at 10,000 steps.
    old_guard = CATEGORIES_GUARD.replace(
        "IF TG_OP = 'UPDATE' AND NEW.parent_id IS NOT DISTINCT FROM OLD.parent_id THEN",
        "IF false THEN",
    )
    op.execute(old_guard.replace("{levels}", str(OLD_CATEGORY_WALK_MAX + 1)))
    with op.get_context().autocommit_block():
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {OLD_INDEX} ON entries (account_id, posted_at)"
        )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NEW_INDEX}")
    op.drop_table("lock_key_secret")
    op.execute("DROP FUNCTION ledger_lock_key_secret_guard()")
