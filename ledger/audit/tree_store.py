"""Every SQL statement of the Merkle tree's stored nodes (migration 0010) and of the records its
leaves are made of. Checkpoints: checkpoint_store.py.

The rows of `audit_tree_nodes` are a cache of what the records give, never a source: anyone with
the service's database role can write them. The sealer recomputes every node it signs over from
the records, and heals the table from them (`repair_nodes`, `delete_beyond`)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa

from ledger.audit import merkle
from ledger.audit.models import AuditRecord, AuditSeal
from ledger.audit.repository import Executor, data_as_stored, record_columns
from ledger.audit.tree_models import AuditTreeNode

Node = tuple[int, int, bytes]  # (level, index, hash)

nodes_t = cast(sa.Table, AuditTreeNode.__table__)
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


def node_ranges(nodes: Sequence[Node]) -> dict[int, tuple[int, int]]:
    """Per level, the first and last index among `nodes` (a page's nodes: contiguous per level)."""
    ranges: dict[int, tuple[int, int]] = {}
    for level, idx, _ in nodes:
        low, high = ranges.get(level, (idx, idx))
        ranges[level] = (min(low, idx), max(high, idx))
    return ranges


def nodes_digest(nodes: Sequence[Node]) -> bytes:
    """What `stored_digest` answers when the stored rows are exactly `nodes`."""
    ordered = sorted(nodes)
    return hashlib.sha256(b"".join(n[2] for n in ordered)).digest()


async def stored_digest(ex: Executor, ranges: dict[int, tuple[int, int]]) -> tuple[int, bytes]:
    """How many nodes are stored in these index ranges per level, and the SHA-256 of their
    hashes in (level, index) order: a page of the tree compared in one row, without sending
    every hash back (the walk fetches them only when the digest differs)."""
    levels = sorted(ranges)
    row = (
        await ex.execute(
            sa.text(
                "SELECT count(*) AS n, sha256(coalesce(string_agg(n.hash, ''::bytea "
                "       ORDER BY w.level, n.idx), ''::bytea)) AS digest "
                "FROM unnest(CAST(:levels AS smallint[]), CAST(:lows AS bigint[]), "
                "            CAST(:highs AS bigint[])) AS w(level, low, high) "
                "CROSS JOIN LATERAL (SELECT t.idx, t.hash FROM audit_tree_nodes AS t "
                "  WHERE t.level = w.level AND t.idx BETWEEN w.low AND w.high) AS n"
            ),
            {
                "levels": levels,
                "lows": [ranges[lv][0] for lv in levels],
                "highs": [ranges[lv][1] for lv in levels],
            },
        )
    ).one()
    return int(row.n), bytes(row.digest)


async def insert_nodes(ex: Executor, nodes: Sequence[Node]) -> list[Node]:
    """Insert the nodes whose place is free; returns those whose place was taken by a row that
    differs (a node the sealer did not write: the caller raises the alarm). One round trip, plus
    one when a place was taken."""
    if not nodes:
        return []
    # The hashes go as one bytea, cut into 32-byte pieces server-side: a bytea[] parameter
    # is quoted element by element on the client, which cost more than hashing the leaves.
    result = await ex.execute(
        sa.text(
            "INSERT INTO audit_tree_nodes (level, idx, hash) "
            "SELECT w.level, w.idx, "
            "       substring(CAST(:hashes AS bytea) FROM CAST(w.n AS int) * 32 - 31 FOR 32) "
            "FROM unnest(CAST(:levels AS smallint[]), CAST(:idxs AS bigint[])) "
            "     WITH ORDINALITY AS w(level, idx, n) "
            "ON CONFLICT (level, idx) DO NOTHING RETURNING level, idx"
        ),
        {
            "levels": [n[0] for n in nodes],
            "idxs": [n[1] for n in nodes],
            "hashes": b"".join(n[2] for n in nodes),
        },
    )
    inserted = {(int(r.level), int(r.idx)) for r in result}
    if len(inserted) == len(nodes):
        return []
    taken = [n for n in nodes if (n[0], n[1]) not in inserted]
    stored = await fetch_nodes(ex, [(n[0], n[1]) for n in taken])
    return [n for n in taken if stored.get((n[0], n[1])) != n[2]]


async def allow_repair(ex: Executor) -> None:
    """Let this transaction delete tree nodes and checkpoints (migration 0015's trigger)."""
    await ex.execute(sa.text("SELECT set_config('ledger.audit_repair', 'on', true)"))


async def repair_nodes(ex: Executor, nodes: Sequence[Node]) -> None:
    """Replace the stored rows at these places by these hashes (recomputed from the records)."""
    if not nodes:
        return
    await allow_repair(ex)
    await ex.execute(
        sa.text(
            "DELETE FROM audit_tree_nodes AS t USING unnest(CAST(:levels AS smallint[]), "
            "CAST(:idxs AS bigint[])) AS w(level, idx) WHERE t.level = w.level AND t.idx = w.idx"
        ),
        {"levels": [n[0] for n in nodes], "idxs": [n[1] for n in nodes]},
    )
    await insert_nodes(ex, nodes)


# A stored node (level, idx) is complete inside a tree of `size` leaves when idx < size >> level:
# anything else covers a leaf no seal has. One index probe per level (the primary key).
_BEYOND = (
    "SELECT l.level, n.idx FROM generate_series(0, 63) AS l(level) "
    "CROSS JOIN LATERAL (SELECT t.idx FROM audit_tree_nodes AS t WHERE t.level = l.level "
    "                    AND t.idx >= (CAST(:size AS bigint) >> l.level) "
    "                    ORDER BY t.idx LIMIT :limit) AS n "
    "ORDER BY l.level, n.idx LIMIT :limit"
)


async def nodes_beyond(ex: Executor, size: int, limit: int = 10) -> list[merkle.NodeKey]:
    """Stored nodes that cover a leaf at or past `size`: forged, or left by a cut chain."""
    rows = await ex.execute(sa.text(_BEYOND), {"size": size, "limit": limit})
    return [(int(r.level), int(r.idx)) for r in rows]


async def delete_beyond(ex: Executor, size: int) -> int:
    """Remove every stored node that covers a leaf at or past `size` (one probe per level)."""
    await allow_repair(ex)
    result = await ex.execute(
        sa.text(
            "DELETE FROM audit_tree_nodes AS t USING generate_series(0, 63) AS l(level) "
            "WHERE t.level = l.level AND t.idx >= (CAST(:size AS bigint) >> l.level)"
        ),
        {"size": size},
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def sealed_records(ex: Executor, *, after_seq: int, limit: int) -> Sequence[sa.Row[Any]]:
    """Seals after `after_seq` in order, each with its record's columns and `data_as_stored`
    (NULL columns when the record is gone): what the tree's leaves are made of."""
    query = (
        sa.select(
            seals_t.c.seq.label("seal_seq"),
            # `data` parsed is not needed: the leaf covers the text as stored, and parsing it
            # too cost more than the rest of the read.
            *record_columns(parsed=False),
            data_as_stored,
        )
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
