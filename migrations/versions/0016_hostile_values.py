"""hostile values: a secret for client-id lock keys, reports that read by entry, stated bounds

Revision ID: 0016_hostile_values
Revises: 0014_console
Create Date: 2026-12-07 01:00:00.000000

- `lock_key_secret`: one row, 32 bytes from PostgreSQL's strong random source (two v4 UUIDs,
  244 random bits, through SHA-256). A client id's advisory lock key is the first 64 bits of
  SHA-256(secret || kind || id), computed in the database (`ledger.core.locks`): no client can
  choose an id whose lock is another's. The row never changes (a trigger refuses UPDATE and
  DELETE): in-flight transactions of every process must hash alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_hostile_values"
down_revision: str | None = "0014_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOCK_SECRET_BYTES = 32

FUNCTIONS = [
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
]


def upgrade() -> None:
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
    op.drop_table("lock_key_secret")
    op.execute("DROP FUNCTION ledger_lock_key_secret_guard()")
