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
    # The C2SP signed note of the same tree head (migration 0015; NULL on older checkpoints):
    # the log's name, and the base64 of the note signature (4-byte key hash || Ed25519).
    origin: Mapped[str | None] = mapped_column(sa.Text)
    note_signature: Mapped[str | None] = mapped_column(sa.String(128))


class AuditCheckpointRefused(Base):
    """A row of `audit_checkpoints` whose signatures did not hold under the configured public
    keys, moved here (with why) by the worker that met it: never delivered. Insert-only."""

    __tablename__ = "audit_checkpoints_refused"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(always=True), primary_key=True)
    tree_size: Mapped[int] = mapped_column(sa.BigInteger)
    root_hash: Mapped[str] = mapped_column(sa.Text)
    timestamp: Mapped[str] = mapped_column(sa.Text)
    key_id: Mapped[str] = mapped_column(sa.Text)
    signature: Mapped[str] = mapped_column(sa.Text)
    origin: Mapped[str | None] = mapped_column(sa.Text)
    note_signature: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime | None]
    refused_at: Mapped[dt.datetime] = mapped_column(server_default=sa.func.now())
    reason: Mapped[str] = mapped_column(sa.Text)


class AuditCheckpointTarget(Base):
    """How far one delivery target got (migration 0015): its kind and identity (`kafka:<topic>`,
    `file:<host>:<path>`), the size of the newest checkpoint delivered there. Kafka's position is
    this row; a file's is its own last line (the row only reports it)."""

    __tablename__ = "audit_checkpoint_targets"

    target: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    delivered_size: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[dt.datetime]

    __table_args__ = (sa.CheckConstraint("delivered_size >= 0", name="size"),)
