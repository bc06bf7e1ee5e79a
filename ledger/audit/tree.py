"""The sealer's side of the Merkle tree: leaves appended with their seals, and signed checkpoints.

The sealer keeps the tree's right edge (`merkle.CompactRange`) in memory while it leads. Each
batch of seals adds its leaves and every complete subtree they finish in the same transaction as
the seals, so the tree has exactly one leaf per seal (leaf index = seal seq - 1) whenever the
chain does. Seals made before migration 0010 (or by a sealer of an older version) get their
leaves first, in bounded transactions of their own (`catch_up`).

A record whose seal exists but whose record is gone cannot be a leaf: the tree then stops there
(and says so loudly) while the hash chain goes on; `ledger audit verify` names that record.

Checkpoints: after a pass, when the tree has grown since the last checkpoint and the last one
is at least AUDIT_CHECKPOINT_INTERVAL_SECONDS old, the sealer signs the current root and inserts
the checkpoint; delivering it to Kafka and the file is the worker's checkpoint outbox job.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.audit import chain, merkle
from ledger.audit import tree_store as store
from ledger.audit.leaf import row_leaf_hash
from ledger.audit.signing import Checkpoint, Signer
from ledger.core import limits

log = structlog.get_logger("ledger.audit.tree")


class SealerTree:
    """The tree state of one leading sealer. `reset()` whenever its connection is dropped or the
    lead changes hands: another sealer may have grown the tree meanwhile."""

    def __init__(
        self,
        signer: Signer | None,
        *,
        checkpoint_interval_seconds: float = limits.AUDIT_CHECKPOINT_INTERVAL_SECONDS,
    ) -> None:
        self.signer = signer
        self.checkpoint_interval_seconds = checkpoint_interval_seconds
        self._edge: merkle.CompactRange | None = None
        self._last_checkpoint_size: int | None = None
        self._last_checkpoint_at = 0.0  # monotonic time of the last checkpoint we know of

    def reset(self) -> None:
        self._edge = None
        self._last_checkpoint_size = None

    @property
    def size(self) -> int | None:
        return None if self._edge is None else self._edge.size

    async def catch_up(self, conn: AsyncConnection) -> None:
        """Load the right edge and add the leaves of seals that have none yet, each batch in a
        transaction of its own. Call outside a transaction, before the pass seals anything."""
        if self._edge is None:
            async with conn.begin():
                size = await store.tree_size(conn)
                nodes = await store.fetch_nodes(conn, merkle.perfect_nodes(0, size))
                self._edge = merkle.CompactRange.of(size, nodes)
                latest = await store.latest_checkpoint(conn)
            self._last_checkpoint_size = None if latest is None else latest.tree_size
            self._last_checkpoint_at = time.monotonic()
        while True:
            edge = self._edge
            async with conn.begin():
                rows = await store.sealed_records(
                    conn, after_seq=edge.size, limit=limits.AUDIT_TREE_LEAVES_PER_TX_MAX
                )
                made = self._leaves_of(rows)
                await store.insert_nodes(conn, made)
            if made:
                log.info("audit.tree_caught_up", leaves=len(rows), tree_size=edge.size)
            if len(rows) < limits.AUDIT_TREE_LEAVES_PER_TX_MAX or not made:
                return

    def _leaves_of(self, rows: Sequence[sa.Row[Any]]) -> list[tuple[int, int, bytes]]:
        """Nodes for the leaves of sealed rows, in seal order, stopping at the first that cannot
        be a leaf (a gap in the seals or a deleted record). Mutates the edge: on any failure
        before commit the caller drops the connection, and with it this state (`reset`)."""
        edge = self._edge
        if edge is None:
            return []
        made: list[tuple[int, int, bytes]] = []
        for row in rows:
            if row.seal_seq != edge.size + 1 or row.id is None:
                log.error(
                    "audit.tree_stalled",
                    tree_size=edge.size,
                    seal_seq=row.seal_seq,
                    detail="a sealed record is missing (or a seal): the Merkle tree stops here "
                    "until it is restored; run `ledger audit verify`",
                )
                break
            made.extend(edge.append(row_leaf_hash(row)))
        return made

    async def append(self, conn: AsyncConnection, head_seq: int, rows: Sequence[Any]) -> None:
        """Inside the seal transaction: the leaves of the records just sealed, in seal order.
        `head_seq` is the chain head before them; a tree behind it (stalled) adds nothing."""
        edge = self._edge
        if edge is None or edge.size != head_seq:
            if edge is not None and edge.size > head_seq:
                log.error(
                    "audit.tree_ahead",
                    tree_size=edge.size,
                    head_seq=head_seq,
                    detail="the Merkle tree has leaves for seals that are gone: the chain was "
                    "cut; run `ledger audit verify --checkpoints`",
                )
            return
        made: list[tuple[int, int, bytes]] = []
        for row in rows:
            made.extend(edge.append(row_leaf_hash(row)))
        await store.insert_nodes(conn, made)

    async def maybe_checkpoint(self, conn: AsyncConnection) -> Checkpoint | None:
        """Sign and store a checkpoint of the current root when one is due. Outside a
        transaction; returns the checkpoint made, if any."""
        edge, signer = self._edge, self.signer
        if signer is None or edge is None or edge.size == 0:
            return None
        if self._last_checkpoint_size is not None and edge.size <= self._last_checkpoint_size:
            return None
        due_at = self._last_checkpoint_at + self.checkpoint_interval_seconds
        if self._last_checkpoint_size is not None and time.monotonic() < due_at:
            return None
        stamp = chain.format_timestamp(dt.datetime.now(dt.UTC))
        checkpoint = signer.sign(edge.size, edge.root().hex(), stamp)
        async with conn.begin():
            await store.insert_checkpoint(conn, checkpoint)
        self._last_checkpoint_size = checkpoint.tree_size
        self._last_checkpoint_at = time.monotonic()
        log.info(
            "audit.checkpoint_signed",
            tree_size=checkpoint.tree_size,
            root_hash=checkpoint.root_hash,
            key_id=checkpoint.key_id,
        )
        return checkpoint
