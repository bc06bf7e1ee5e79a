"""Every SQL statement of the Merkle tree and its checkpoints (tables of migration 0010)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa

from ledger.audit import merkle
from ledger.audit.models import AuditRecord, AuditSeal
from ledger.audit.repository import Executor, data_as_stored
from ledger.audit.signing import Checkpoint
from ledger.audit.tree_models import AuditCheckpoint, AuditCheckpointDelivery, AuditTreeNode
from ledger.core.locks import LockClass

nodes_t = cast(sa.Table, AuditTreeNode.__table__)
checkpoints_t = cast(sa.Table, AuditCheckpoint.__table__)
deliveries_t = cast(sa.Table, AuditCheckpointDelivery.__table__)
records_t = cast(sa.Table, AuditRecord.__table__)
seals_t = cast(sa.Table, AuditSeal.__table__)


# -- nodes ----------------------------------------------------------------------------------------


async def tree_size(ex: Executor) -> int:
    """Leaves stored: level 0 runs 0, 1, 2, ... (the sealer adds them in order)."""
    query = sa.select(sa.func.coalesce(sa.func.max(nodes_t.c.idx) + 1, 0)).where(
        nodes_t.c.level == 0
    )
    return int((await ex.execute(query)).scalar_one())


async def fetch_nodes(ex: Executor, keys: Iterable[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
    """The stored hashes of `keys` (O(log n) of them for any root or proof): one query."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await ex.execute(
        sa.text(
            # A lateral probe per wanted node: one primary-key lookup each, never a scan of
            # the table (a hash join over it would read every node of the tree).
            "SELECT w.level, w.idx, n.hash "
            "FROM unnest(CAST(:levels AS smallint[]), CAST(:idxs AS bigint[])) AS w(level, idx) "
            "CROSS JOIN LATERAL (SELECT t.hash FROM audit_tree_nodes AS t "
            "                    WHERE t.level = w.level AND t.idx = w.idx) AS n"
        ),
        {"levels": [k[0] for k in wanted], "idxs": [k[1] for k in wanted]},
    )
    return {(int(r.level), int(r.idx)): bytes(r.hash) for r in rows}


async def insert_nodes(ex: Executor, nodes: Sequence[tuple[int, int, bytes]]) -> None:
    if not nodes:
        return
    # The hashes go as one bytea, cut into 32-byte pieces server-side: a bytea[] parameter
    # is quoted element by element on the client, which cost more than hashing the leaves.
    await ex.execute(
        sa.text(
            "INSERT INTO audit_tree_nodes (level, idx, hash) "
            "SELECT w.level, w.idx, "
            "       substring(CAST(:hashes AS bytea) FROM CAST(w.n AS int) * 32 - 31 FOR 32) "
            "FROM unnest(CAST(:levels AS smallint[]), CAST(:idxs AS bigint[])) "
            "     WITH ORDINALITY AS w(level, idx, n)"
        ),
        {
            "levels": [n[0] for n in nodes],
            "idxs": [n[1] for n in nodes],
            "hashes": b"".join(n[2] for n in nodes),
        },
    )


def _record_columns() -> list[Any]:
    return [c for c in records_t.c if c.name != "data_text"]


async def sealed_records(ex: Executor, *, after_seq: int, limit: int) -> Sequence[sa.Row[Any]]:
    """Seals after `after_seq` in order, each with its record's columns and `data_as_stored`
    (NULL columns when the record is gone): what the tree's leaves are made of."""
    query = (
        sa.select(seals_t.c.seq.label("seal_seq"), *_record_columns(), data_as_stored)
        .select_from(seals_t.outerjoin(records_t, records_t.c.id == seals_t.c.record_id))
        .where(seals_t.c.seq > after_seq)
        .order_by(seals_t.c.seq)
        .limit(limit)
    )
    # A select of a column list is typed by its arity; the rows are the same Row.
    return cast(Sequence[sa.Row[Any]], (await ex.execute(query)).all())


@dataclass(frozen=True, slots=True)
class LeafPosition:
    exists: bool
    seal_seq: int | None


async def leaf_position(ex: Executor, record_id: uuid.UUID) -> LeafPosition:
    """Whether the record exists and, when sealed, its seal seq (its leaf index + 1)."""
    query = (
        sa.select(records_t.c.id, seals_t.c.seq)
        .select_from(records_t.outerjoin(seals_t, seals_t.c.record_id == records_t.c.id))
        .where(records_t.c.id == record_id)
    )
    row = (await ex.execute(query)).first()
    if row is None:
        return LeafPosition(False, None)
    return LeafPosition(True, None if row.seq is None else int(row.seq))


# -- checkpoints ----------------------------------------------------------------------------------


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(
        tree_size=int(row.tree_size),
        root_hash=row.root_hash,
        timestamp=row.timestamp,
        key_id=row.key_id,
        signature=row.signature,
    )


_CHECKPOINT_COLUMNS = (
    checkpoints_t.c.tree_size,
    checkpoints_t.c.root_hash,
    checkpoints_t.c.timestamp,
    checkpoints_t.c.key_id,
    checkpoints_t.c.signature,
)


async def insert_checkpoint(ex: Executor, checkpoint: Checkpoint) -> None:
    await ex.execute(
        sa.insert(checkpoints_t).values(
            tree_size=checkpoint.tree_size,
            root_hash=checkpoint.root_hash,
            timestamp=checkpoint.timestamp,
            key_id=checkpoint.key_id,
            signature=checkpoint.signature,
        )
    )


async def latest_checkpoint(ex: Executor) -> Checkpoint | None:
    query = sa.select(*_CHECKPOINT_COLUMNS).order_by(checkpoints_t.c.tree_size.desc()).limit(1)
    row = (await ex.execute(query)).first()
    return None if row is None else _checkpoint(row)


async def latest_checkpoint_created_at(ex: Executor) -> dt.datetime | None:
    query = (
        sa.select(checkpoints_t.c.created_at).order_by(checkpoints_t.c.tree_size.desc()).limit(1)
    )
    value = (await ex.execute(query)).scalar()
    return value if isinstance(value, dt.datetime) else None


async def list_checkpoints(
    ex: Executor, *, before_size: int | None, limit: int
) -> list[Checkpoint]:
    """Newest first (by tree size); keyset pagination on the size."""
    query = sa.select(*_CHECKPOINT_COLUMNS).order_by(checkpoints_t.c.tree_size.desc()).limit(limit)
    if before_size is not None:
        query = query.where(checkpoints_t.c.tree_size < before_size)
    return [_checkpoint(r) for r in await ex.execute(query)]


async def undelivered(ex: Executor, target: str, limit: int) -> list[Checkpoint]:
    """Checkpoints not yet delivered to `target`, oldest first."""
    delivered = sa.exists().where(
        (deliveries_t.c.tree_size == checkpoints_t.c.tree_size) & (deliveries_t.c.target == target)
    )
    query = (
        sa.select(*_CHECKPOINT_COLUMNS)
        .where(~delivered)
        .order_by(checkpoints_t.c.tree_size)
        .limit(limit)
    )
    return [_checkpoint(r) for r in await ex.execute(query)]


async def mark_delivered(ex: Executor, target: str, sizes: Sequence[int], now: dt.datetime) -> None:
    if not sizes:
        return
    await ex.execute(
        sa.text(
            "INSERT INTO audit_checkpoint_deliveries (tree_size, target, delivered_at) "
            "SELECT s, :target, :now FROM unnest(CAST(:sizes AS bigint[])) AS s "
            "ON CONFLICT DO NOTHING"
        ),
        {"target": target, "now": now, "sizes": list(sizes)},
    )


async def try_delivery_lock(ex: Executor, key: int) -> bool:
    """One delivery per target at a time (until the transaction ends)."""
    query = sa.select(
        sa.func.pg_try_advisory_xact_lock(int(LockClass.AUDIT_CHECKPOINT_DELIVERY), key)
    )
    return bool((await ex.execute(query)).scalar())
