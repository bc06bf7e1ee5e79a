"""the auditor console: server-side browser sessions, its CSRF secret, audit search by request id

Revision ID: 0014_console
Revises: 0009
Create Date: 2026-11-29 23:00:00.000000

Sessions live in the database so that every API process (`serve --workers N`, or several hosts)
sees the same ones, a sign-out ends a session everywhere, and no cookie carries anything but a
random id. The CSRF secret is made here, once, from PostgreSQL's strong random source
(`gen_random_uuid`), so every process signs and checks the console's form tokens alike without a
new setting. The index serves the console's search by request id.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_console"
down_revision: str | None = "0012_money_movement"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
    )
    op.create_index(
        "ix_console_sessions_expires_at", "console_sessions", ["expires_at"], unique=False
    )
    op.create_table(
        "console_secret",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("csrf_secret", sa.String(length=64), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_console_secret_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_secret")),
    )
    # 244 random bits from two v4 UUIDs, hashed to 64 hex characters.
    op.execute(
        "INSERT INTO console_secret (id, csrf_secret) "
        "SELECT 1, encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, "
        "'UTF8')), 'hex')"
    )
    op.create_index(
        "ix_audit_records_request_id_seq", "audit_records", ["request_id", "seq"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_audit_records_request_id_seq", table_name="audit_records")
    op.drop_table("console_secret")
    op.drop_index("ix_console_sessions_expires_at", table_name="console_sessions")
    op.drop_table("console_sessions")
