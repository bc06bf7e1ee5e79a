"""audit trust: signed notes on checkpoints, refused checkpoints, delivery per target, repairs

Revision ID: 0015_audit_trust
Revises: 0014_console
Create Date: 2026-12-06 12:00:00.000000

The service's own database role can write any row (it owns the tables, so it can even switch
their triggers off). So nothing the workers read back is taken on its word:

- `audit_checkpoints` gains the checkpoint's C2SP signed note (`origin`, `note_signature`, NULL
  on checkpoints signed before this migration). A row whose signatures do not hold under the
  configured public keys is moved to `audit_checkpoints_refused` (insert-only) by the worker that
  meets it, with the reason, and is never delivered.
- Delivery is tracked per target (its kind and its identity, e.g. `kafka:<topic>`), as Kafka
  consumer groups keep offsets per group: `audit_checkpoint_targets` replaces
  `audit_checkpoint_deliveries`, whose targets were kinds (`kafka`, `file`), so that two workers
  with two files split the checkpoints between them. The Kafka position under the default topic
  is carried over; a file's position is the file's own last line.
- The sealer heals the stored tree from the records: the append-only triggers of
  `audit_tree_nodes` and `audit_checkpoints` let a transaction that says so
  (`SET LOCAL ledger.audit_repair = 'on'`) delete rows. The triggers guard against mistakes; what
  guards against the role itself is that the sealer recomputes every leaf from the records and
  signs nothing else, and that every copy that leaves is checked against the public keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_audit_trust"
down_revision: str | None = "0014_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPAIRABLE = ("audit_tree_nodes", "audit_checkpoints")
DEFAULT_KAFKA_TARGET = "kafka:ledger.audit.checkpoints"

REPAIR_GUARD = """
CREATE FUNCTION ledger_audit_repair_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('ledger.audit_repair', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% on % is not allowed: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$
"""


def upgrade() -> None:
    op.add_column("audit_checkpoints", sa.Column("origin", sa.Text(), nullable=True))
    op.add_column(
        "audit_checkpoints", sa.Column("note_signature", sa.String(length=128), nullable=True)
    )
    op.create_table(
        "audit_checkpoints_refused",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=True),
        sa.Column("note_signature", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "refused_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints_refused")),
    )
    op.create_table(
        "audit_checkpoint_targets",
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("delivered_size", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("delivered_size >= 0", name=op.f("ck_audit_checkpoint_targets_size")),
        sa.PrimaryKeyConstraint("target", name=op.f("pk_audit_checkpoint_targets")),
    )
    op.execute(
        "INSERT INTO audit_checkpoint_targets (target, delivered_size, updated_at) "
        f"SELECT '{DEFAULT_KAFKA_TARGET}', max(tree_size), max(delivered_at) "
        "FROM audit_checkpoint_deliveries WHERE target = 'kafka' HAVING count(*) > 0"
    )
    op.drop_table("audit_checkpoint_deliveries")
    op.execute(
        "CREATE TRIGGER audit_checkpoints_refused_append_only BEFORE UPDATE OR DELETE ON "
        "audit_checkpoints_refused FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change()"
    )
    op.execute(REPAIR_GUARD)
    for table in REPAIRABLE:
        op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_audit_repair_guard()"
        )


def downgrade() -> None:
    for table in REPAIRABLE:
        op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change()"
        )
    op.execute("DROP FUNCTION ledger_audit_repair_guard()")
    op.create_table(
        "audit_checkpoint_deliveries",
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", "target", name=op.f("pk_audit_checkpoint_deliveries")),
    )
    op.drop_table("audit_checkpoint_targets")
    op.drop_table("audit_checkpoints_refused")
    op.drop_column("audit_checkpoints", "note_signature")
    op.drop_column("audit_checkpoints", "origin")
