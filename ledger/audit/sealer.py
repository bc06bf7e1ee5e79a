"""The audit sealer: chains committed audit records into `audit_seals`, after the fact.

Writers insert audit records with no shared lock (a chain head locked by every writer would
serialise the whole ledger). This job, run by `ledger worker`, appends one seal per record in the
order it sees records commit. One sealer is active at a time (`pg_try_advisory_lock`, held on a
connection of its own); a second worker stays on standby and takes over when that connection dies.

The late-commit problem: `audit_records.seq` is taken at insert, commits land in another order,
so "everything after the last seq I sealed" would skip a record whose transaction was slow. Each
record carries its transaction id (`xact_id`), and a pass rescans from the xmin of the snapshot
taken at the start of the previous pass: every transaction older than that xmin had finished, so
its records were visible to that pass and are sealed already. Nothing is skipped, at any commit
order, and a pass only looks at the records of recent transactions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from ledger.audit import chain
from ledger.audit import repository as repo
from ledger.core import limits
from ledger.core.errors import ConfigurationError
from observability import metrics

log = structlog.get_logger("ledger.audit.sealer")


@dataclasses.dataclass(slots=True)
class SealPass:
    """What one pass did: how many records it sealed and the chain head it left."""

    sealed: int = 0
    head_seq: int = 0


def engine_of(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine behind the worker's sessionmaker: the sealer needs a connection of its own."""
    bind = sessionmaker.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise ConfigurationError("the audit sealer needs a sessionmaker bound to an engine")
    return bind


class AuditSealer:
    """The job's state: its connection (and lock), and the xid horizon of its last full pass."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = limits.AUDIT_SEAL_BATCH_SIZE,
        grace_seconds: float = limits.AUDIT_SEAL_GRACE_SECONDS,
    ) -> None:
        if not 1 <= batch_size <= 100_000:
            raise ValueError("batch_size must be 1..100000")
        self._engine = engine
        self._batch_size = batch_size
        self._grace = dt.timedelta(seconds=grace_seconds)
        self._conn: AsyncConnection | None = None
        self._leading = False
        # 0 until the first full pass: the first pass looks at every record once.
        self._horizon = 0

    @property
    def leading(self) -> bool:
        return self._leading

    async def step(self) -> int:
        """One worker step: seal everything visible now. Returns how many records it sealed."""
        conn = await self._lead()
        if conn is None:
            return 0
        try:
            done = await self._seal_visible(conn)
        except BaseException:
            # The connection may be broken: drop it (and the lock with it) and start over.
            await self.close()
            raise
        if done.sealed:
            metrics.AUDIT_SEALED.inc(done.sealed)
            log.info("audit.sealed", count=done.sealed, head_seq=done.head_seq)
        return done.sealed

    async def paced_step(self) -> int:
        """The worker loop's step. A pass leaves no known backlog (it seals until a batch comes
        back short), so it reports none and the loop waits its interval: the next pass then seals
        what committed meanwhile in one go, rather than one busy pass per commit."""
        await self.step()
        return 0

    async def close(self) -> None:
        conn, self._conn, self._leading = self._conn, None, False
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # a dead connection cannot be closed politely
                await conn.invalidate()

    async def _lead(self) -> AsyncConnection | None:
        if self._conn is None:
            self._conn = await self._engine.connect()
            self._leading = False
        if not self._leading:
            try:
                got = await repo.try_lead(
                    self._conn,
                    f"ledger-sealer:{os.getpid()}",
                    limits.AUDIT_SEALER_IDLE_SESSION_TIMEOUT_MS,
                )
                await self._conn.commit()
            except BaseException:
                await self.close()
                raise
            if not got:
                return None
            self._leading = True
            self._horizon = 0  # someone else may have sealed while we stood by: look again
            log.info("audit.sealer_active", pid=os.getpid())
        return self._conn

    async def _seal_visible(self, conn: AsyncConnection) -> SealPass:
        """One pass: batches of one transaction each, all stamped with the pass's start time, so
        that a backlog sealed after an outage reads as one pass (see verify's late-seal rule)."""
        done = SealPass()
        horizon_next = self._horizon
        sealed_at: dt.datetime | None = None
        late_before: dt.datetime | None = None
        after_seq = 0
        while True:
            async with conn.begin():
                head = await repo.chain_head(conn)
                if sealed_at is None:
                    horizon_next, sealed_at = await repo.sealer_clock(conn)
                    if head is not None:
                        late_before = head.sealed_at - self._grace
                rows = await repo.unsealed_records(
                    conn, horizon=self._horizon, after_seq=after_seq, limit=self._batch_size
                )
                links = _chain(rows, head, sealed_at)
                await repo.insert_seals(conn, links)
            _warn_late(rows, late_before)
            if links:
                done.sealed += len(links)
                done.head_seq = links[-1].seq
                after_seq = rows[-1].seq
            if len(rows) < self._batch_size:
                break
        self._horizon = horizon_next
        return done


def _chain(
    rows: Sequence[sa.Row[Any]], head: repo.ChainHead | None, sealed_at: dt.datetime
) -> list[chain.SealLink]:
    seq, prev_hash = (0, chain.GENESIS_HASH) if head is None else (head.seq, head.hash)
    links = []
    for row in rows:
        seq += 1
        item = chain.link(seq, prev_hash, sealed_at, row)
        prev_hash = item.hash
        links.append(item)
    return links


def _warn_late(rows: Sequence[sa.Row[Any]], late_before: dt.datetime | None) -> None:
    """Verify calls a record sealed late when an earlier pass ran long after it was written: say
    so when it happens, so an operator hears of it before an auditor does."""
    if late_before is None:
        return
    for row in rows:
        if row.at < late_before:
            metrics.AUDIT_SEALED_LATE.inc()
            log.error(
                "audit.sealed_late",
                record_id=str(row.id),
                detail="written long before an earlier seal: inserted behind the service's back?",
            )
