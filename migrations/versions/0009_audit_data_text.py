"""audit records also keep `data` as the exact text the writer encoded (`data_text`, json)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 22:10:00.000000

`GET /v1/audit` answered `data` read back from jsonb, which reprints metadata numbers (`1e23`
as `1e+23`). `data_text` keeps the writer's text and is what the trail answers. The jsonb
`data` stays as it is: the seal chain hashes it (every existing seal must still verify) and the
reversal lookup queries it.

Records written before this migration keep NULL (audit_records is insert-only, and rewriting it
would touch every row): they are answered from `data`, as before. Adding a NULL column rewrites
nothing, so the append-only triggers are not involved.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_records", sa.Column("data_text", postgresql.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_records", "data_text")
