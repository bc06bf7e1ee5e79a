"""verifiable audit: the Merkle tree's complete-subtree hashes and signed checkpoints

Revision ID: 0010_audit_merkle
Revises: 0009
Create Date: 2026-11-29 23:30:00.000000

`audit_tree_nodes` keeps the hash of every complete subtree of the RFC 9162 tree over sealed
records (level 0: one leaf hash per seal), so that any root or proof reads O(log n) rows.
`audit_checkpoints` keeps the checkpoints the worker signed; `audit_checkpoint_deliveries`
records which of them reached Kafka and the checkpoint file (an outbox of their own).

Nodes and checkpoints are insert-only, guarded by the same trigger as the audit records. Seals
made before this migration get their leaves from the sealer, which catches the tree up with the
chain before it seals anything new: nothing is rewritten here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_audit_merkle"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GUARDED = ("audit_tree_nodes", "audit_checkpoints")


def upgrade() -> None:
    op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(
            "level >= 0 AND level < 64 AND idx >= 0", name=op.f("ck_audit_tree_nodes_node_position")
        ),
        sa.CheckConstraint(
            "octet_length(hash) = 32", name=op.f("ck_audit_tree_nodes_node_hash_length")
        ),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_audit_tree_nodes")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("timestamp", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("tree_size", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "audit_checkpoint_deliveries",
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", "target", name=op.f("pk_audit_checkpoint_deliveries")),
    )
    for table in GUARDED:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change()"
        )


def downgrade() -> None:
    op.drop_table("audit_checkpoint_deliveries")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_tree_nodes")
