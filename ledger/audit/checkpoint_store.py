"""Every SQL statement of the signed checkpoints (migrations 0010 and 0015): the sealer's inserts,
the readers' pages, refused rows, and each delivery target's position.

A row here is what someone inserted, not what the key signed: every reader checks it with the
public keys (ledger/audit/keys.py) before it trusts, lists or delivers it."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ledger.audit.repository import Executor
from ledger.audit.signing import Checkpoint
from ledger.audit.tree_models import AuditCheckpoint, AuditCheckpointTarget
from ledger.audit.tree_store import allow_repair
from ledger.core.locks import LockClass

checkpoints_t = cast(sa.Table, AuditCheckpoint.__table__)
targets_t = cast(sa.Table, AuditCheckpointTarget.__table__)

_COLUMNS = (
    checkpoints_t.c.tree_size,
    checkpoints_t.c.root_hash,
    checkpoints_t.c.timestamp,
    checkpoints_t.c.key_id,
    checkpoints_t.c.signature,
    checkpoints_t.c.origin,
    checkpoints_t.c.note_signature,
)


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(
        tree_size=int(row.tree_size),
        root_hash=row.root_hash,
        timestamp=row.timestamp,
        key_id=row.key_id,
        signature=row.signature,
        origin=row.origin,
        note_signature=row.note_signature,
    )


async def insert_checkpoint(ex: Executor, checkpoint: Checkpoint) -> bool:
    """False when a row holds that tree size already (the caller looks at it)."""
    query = (
        pg_insert(checkpoints_t)
        .values(
            tree_size=checkpoint.tree_size,
            root_hash=checkpoint.root_hash,
            timestamp=checkpoint.timestamp,
            key_id=checkpoint.key_id,
            signature=checkpoint.signature,
            origin=checkpoint.origin,
            note_signature=checkpoint.note_signature,
        )
        .on_conflict_do_nothing(index_elements=["tree_size"])
        .returning(checkpoints_t.c.tree_size)
    )
    return (await ex.execute(query)).first() is not None


async def checkpoint_at(ex: Executor, tree_size: int) -> Checkpoint | None:
    query = sa.select(*_COLUMNS).where(checkpoints_t.c.tree_size == tree_size)
    row = (await ex.execute(query)).first()
    return None if row is None else _checkpoint(row)


async def newest_first(ex: Executor, *, before_size: int | None, limit: int) -> list[Checkpoint]:
    """Rows newest first (by tree size); keyset pagination on the size."""
    query = sa.select(*_COLUMNS).order_by(checkpoints_t.c.tree_size.desc()).limit(limit)
    if before_size is not None:
        query = query.where(checkpoints_t.c.tree_size < before_size)
    return [_checkpoint(r) for r in await ex.execute(query)]


async def oldest_first(
    ex: Executor, *, after_size: int, limit: int, up_to_size: int | None = None
) -> list[Checkpoint]:
    """Rows with a tree size above `after_size` (and at most `up_to_size`), oldest first."""
    query = (
        sa.select(*_COLUMNS)
        .where(checkpoints_t.c.tree_size > after_size)
        .order_by(checkpoints_t.c.tree_size)
        .limit(limit)
    )
    if up_to_size is not None:
        query = query.where(checkpoints_t.c.tree_size <= up_to_size)
    return [_checkpoint(r) for r in await ex.execute(query)]


async def refuse(ex: Executor, checkpoint: Checkpoint, reason: str) -> bool:
    """Move the row out of `audit_checkpoints` into `audit_checkpoints_refused`, with why: only
    for a row that holds the tree size the sealer must sign at (others stay where they are, and
    every reader skips them). False when it is gone already."""
    await allow_repair(ex)
    result = await ex.execute(
        sa.text(
            "WITH gone AS (DELETE FROM audit_checkpoints WHERE tree_size = :size "
            "  AND signature = :signature AND root_hash = :root RETURNING *) "
            "INSERT INTO audit_checkpoints_refused (tree_size, root_hash, timestamp, key_id, "
            "  signature, origin, note_signature, created_at, reason) "
            "SELECT tree_size, root_hash, timestamp, key_id, signature, origin, note_signature, "
            "  created_at, :reason FROM gone RETURNING id"
        ),
        {
            "size": checkpoint.tree_size,
            "signature": checkpoint.signature,
            "root": checkpoint.root_hash,
            "reason": reason,
        },
    )
    return result.first() is not None


async def target_position(ex: Executor, target: str) -> int:
    """The tree size of the newest checkpoint delivered to `target` (0 before the first)."""
    query = sa.select(targets_t.c.delivered_size).where(targets_t.c.target == target)
    value = (await ex.execute(query)).scalar()
    return int(value) if value is not None else 0


async def set_target_position(ex: Executor, target: str, size: int, now: dt.datetime) -> None:
    await ex.execute(
        sa.text(
            "INSERT INTO audit_checkpoint_targets (target, delivered_size, updated_at) "
            "VALUES (:target, :size, :now) ON CONFLICT (target) DO UPDATE "
            "SET delivered_size = excluded.delivered_size, updated_at = excluded.updated_at"
        ),
        {"target": target, "size": size, "now": now},
    )


async def try_delivery_lock(ex: Executor, key: int) -> bool:
    """One delivery per target at a time (until the transaction ends)."""
    query = sa.select(
        sa.func.pg_try_advisory_xact_lock(int(LockClass.AUDIT_CHECKPOINT_DELIVERY), key)
    )
    return bool((await ex.execute(query)).scalar())
