"""The Merkle tree's stored nodes and the signed checkpoints over it (migration 0010)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ledger.core.db import Base


class AuditTreeNode(Base):
    """The hash of one complete subtree: leaves [idx * 2**level, (idx + 1) * 2**level). Level 0
    holds the leaf hashes, one per seal (leaf idx = seal seq - 1). Insert-only (trigger)."""

    __tablename__ = "audit_tree_nodes"

    level: Mapped[int] = mapped_column(sa.SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(sa.LargeBinary)

    __table_args__ = (
        sa.CheckConstraint("level >= 0 AND level < 64 AND idx >= 0", name="node_position"),
        sa.CheckConstraint("octet_length(hash) = 32", name="node_hash_length"),
    )


class AuditCheckpoint(Base):
    """A signed checkpoint, as signed (`timestamp` is the signed text). Insert-only (trigger)."""

    __tablename__ = "audit_checkpoints"

    tree_size: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[str] = mapped_column(sa.String(64))
    timestamp: Mapped[str] = mapped_column(sa.String(64))
    key_id: Mapped[str] = mapped_column(sa.String(64))
    signature: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=sa.func.now())


class AuditCheckpointDelivery(Base):
    """A checkpoint delivered to one target (`kafka`, `file`): the checkpoints' own outbox."""

    __tablename__ = "audit_checkpoint_deliveries"

    tree_size: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    target: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    delivered_at: Mapped[dt.datetime]
