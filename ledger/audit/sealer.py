"""The audit sealer: chains committed audit records into `audit_seals`, after the fact.

Writers insert audit records with no shared lock (a chain head locked by every writer would
serialise the whole ledger). This job, run by `ledger worker`, appends one seal per record in the
order it sees records commit. One sealer is active at a time (`pg_try_advisory_lock`, held on a
connection of its own); a second worker stays on standby and takes over when that connection dies.

The connection is the sealer's alone: it comes from an engine without a pool, so it never goes
back to the worker's pool with the session lock and the short idle timeouts still on it. On any
error it is thrown away (closed, and the lock dies with it), and the next pass connects anew.

The late-commit problem: `audit_records.seq` is taken at insert, commits land in another order,
so "everything after the last seq I sealed" would skip a record whose transaction was slow. Each
record carries its transaction id (`xact_id`), and a pass rescans from the xmin of the snapshot
taken at the start of the previous pass that finished its scan: every transaction older than
that xmin had finished, so its records were visible to that pass and are sealed already. Nothing
is skipped, at any commit order, and a pass only looks at the records of recent transactions.
That horizon is written into every seal (with the pass's `next_xid`, see chain.PassFacts), so a
sealer that takes over starts from the chain head's, and verification can rely on it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from ledger.audit import chain
from ledger.audit import repository as repo
from ledger.audit.keys import Keyring
from ledger.audit.signing import Signer
from ledger.audit.tree import SealerTree
from ledger.core import limits
from ledger.core.db import is_unavailable
from ledger.core.errors import ConfigurationError, ServiceUnavailable
from observability import metrics

log = structlog.get_logger("ledger.audit.sealer")


@dataclasses.dataclass(slots=True)
class SealPass:
    """What one pass did: how many records it sealed and the chain head it left."""

    sealed: int = 0
    head_seq: int = 0


def engine_of(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine behind the worker's sessionmaker: the database the sealer seals."""
    bind = sessionmaker.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise ConfigurationError("the audit sealer needs a sessionmaker bound to an engine")
    return bind


def sealer_engine(url: sa.URL) -> AsyncEngine:
    """An engine without a pool for the sealer's one connection: closing that connection ends
    its session (and the lock), where a pool would keep it open for the next borrower.

    Its statements are planned for their real parameters every time (`force_custom_plan`): the
    search for unsealed records (`xact_id >= horizon`, in seq order) has a generic plan that
    walks the whole table in seq order, which PostgreSQL's plan cache prefers once the statement
    is prepared; with the horizon known it reads only the recent records through the xact_id
    index. A few statements per pass make the extra planning cheap."""
    options = (
        f"-c lock_timeout={limits.DB_LOCK_TIMEOUT_MS} "
        f"-c statement_timeout={limits.DB_STATEMENT_TIMEOUT_MS} "
        "-c timezone=UTC "
        "-c plan_cache_mode=force_custom_plan"
    )
    return create_async_engine(
        url,
        poolclass=NullPool,
        isolation_level="READ COMMITTED",
        connect_args={
            "options": options,
            "connect_timeout": limits.DB_CONNECT_TIMEOUT_SECONDS,
            "application_name": "ledger-sealer",
        },
    )


class AuditSealer:
    """The job's state: its connection (and lock), and the xid horizon of its last full pass.
    `engine` names the database; the sealer connects through a pool-less engine of its own."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size: int = limits.AUDIT_SEAL_BATCH_SIZE,
        grace_seconds: float | None = None,
        signer: Signer | None = None,
        keys: Keyring | None = None,
        checkpoint_interval_seconds: float = limits.AUDIT_CHECKPOINT_INTERVAL_SECONDS,
    ) -> None:
        if not 1 <= batch_size <= 100_000:
            raise ValueError("batch_size must be 1..100000")
        self._url = engine.url
        self._engine: AsyncEngine | None = None
        self._batch_size = batch_size
        self._grace_seconds = grace_seconds
        self._conn: AsyncConnection | None = None
        self._leading = False
        # Set by `stop_soon` (the worker is shutting down): a pass ends after the batch it is in.
        self._stopping = False
        # None until this sealer leads: it then starts from the chain head's horizon.
        self._horizon: int | None = None
        # The Merkle tree's right edge and checkpoints (ledger/audit/tree.py); no signer: leaves
        # only (tests that seal in-process), `ledger worker` always has one, and its keyring.
        self.tree = SealerTree(
            signer, keys=keys, checkpoint_interval_seconds=checkpoint_interval_seconds
        )

    @property
    def leading(self) -> bool:
        return self._leading

    async def step(self) -> int:
        """One worker step: seal everything visible now. Returns how many records it sealed."""
        try:
            conn = await self._lead()
            if conn is None:
                return 0
            await self.tree.advance(conn)
            done = await self._seal_visible(conn)
            await self.tree.check_stored(conn)
            await self.tree.maybe_checkpoint(conn)
        except BaseException as exc:
            # Whatever broke (the database, a cancelled statement, a shutdown in the middle of a
            # pass), the connection may hold the lock in an unknown state: throw it away.
            await self._drop_connection()
            if isinstance(exc, Exception) and is_unavailable(exc):
                raise ServiceUnavailable("the audit sealer lost its database connection") from exc
            raise
        if done.sealed:
            metrics.AUDIT_SEALED.inc(done.sealed)
            log.info("audit.sealed", count=done.sealed, head_seq=done.head_seq)
        return done.sealed

    def stop_soon(self) -> None:
        """The worker is stopping: end the pass (and the tree's walk) at the next transaction's
        end, so that a backlog of any size holds the shutdown for one batch at most. What is
        committed stays; the next start resumes from the chain head, as after any cut pass."""
        self._stopping = True
        self.tree.stopping = True

    async def paced_step(self) -> int:
        """The worker loop's step. A pass leaves no known backlog (it seals until a batch comes
        back short), so it reports none and the loop waits its interval: the next pass then seals
        what committed meanwhile in one go, rather than one busy pass per commit. While the tree
        is being recomputed from the records it reports work, so the walk goes on at once."""
        await self.step()
        return 1 if self._leading and self.tree.building and not self._stopping else 0

    async def close(self) -> None:
        await self._drop_connection()
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    async def _drop_connection(self) -> None:
        """Close the connection for good: invalidated, it is closed rather than reset, and with
        no pool behind it nothing else can ever get it (nor the session lock on it)."""
        conn, self._conn, self._leading = self._conn, None, False
        self.tree.reset()
        if conn is None:
            return
        try:
            await conn.invalidate()
        except Exception:  # a dead connection may fail even that: it is gone either way
            log.debug("audit.sealer_invalidate_failed", exc_info=True)
        try:
            await conn.close()
        except Exception:
            log.debug("audit.sealer_close_failed", exc_info=True)

    async def _lead(self) -> AsyncConnection | None:
        if self._engine is None:
            self._engine = sealer_engine(self._url)
        if self._conn is None:
            self._conn = await self._engine.connect()
            self._leading = False
        if not self._leading:
            async with self._conn.begin():
                got = await repo.try_lead(
                    self._conn,
                    f"ledger-sealer:{os.getpid()}",
                    limits.AUDIT_SEALER_IDLE_SESSION_TIMEOUT_MS,
                )
            if not got:
                return None
            self._leading = True
            self._horizon = None  # someone else may have sealed while we stood by: ask the chain
            self.tree.reset()
            log.info("audit.sealer_active", pid=os.getpid())
        return self._conn

    async def _seal_visible(self, conn: AsyncConnection) -> SealPass:
        """One pass: batches of one transaction each, all stamped with the facts and time of the
        pass's first write (see chain.PassFacts), so that a backlog reads as one pass."""
        done = SealPass()
        horizon = horizon_next = 0
        stamp: tuple[chain.PassFacts, dt.datetime] | None = None
        head_facts: tuple[chain.PassFacts, dt.datetime] | None = None
        after_seq = 0
        while True:
            async with conn.begin():
                head = await repo.chain_head(conn)
                if after_seq == 0:
                    horizon_next, xmax = await repo.snapshot_bounds(conn)
                    horizon = _start_horizon(self._horizon, head, xmax)
                    if head is not None and head.facts is not None:
                        head_facts = (head.facts, head.sealed_at)
                rows = await repo.unsealed_records(
                    conn, horizon=horizon, after_seq=after_seq, limit=self._batch_size
                )
                if rows and stamp is None:
                    stamp = await repo.pass_facts(conn, horizon)
                links = [] if stamp is None else _chain(rows, head, *stamp)
                await repo.insert_seals(conn, links)
                await self.tree.append(conn, 0 if head is None else head.seq, rows[: len(links)])
            self.tree.committed()
            self._warn_inserted(rows, [head_facts, stamp])
            if links:
                done.sealed += len(links)
                done.head_seq = links[-1].seq
                after_seq = rows[-1].seq
            if len(rows) < self._batch_size:
                break
            if self._stopping:
                log.info("audit.sealer_pass_cut", sealed=done.sealed, reason="stopping")
                return done
        # Only a pass that scanned to the end may move the horizon: a pass cut short leaves it,
        # and the next one (or the chain head's, after a reconnect) covers what it did not reach.
        self._horizon = horizon_next
        return done

    def _warn_inserted(
        self,
        rows: Sequence[sa.Row[Any]],
        passes: Sequence[tuple[chain.PassFacts, dt.datetime] | None],
    ) -> None:
        """Verify names a record whose transaction began after a pass that ran more than the grace
        period after the record's `at`. The sealer knows two such passes (the chain head's and its
        own): say so when it seals one, so an operator hears of it before an auditor does."""
        grace = dt.timedelta(
            seconds=limits.AUDIT_INSERTION_GRACE_SECONDS
            if self._grace_seconds is None
            else self._grace_seconds
        )
        known = [p for p in passes if p is not None]
        for row in rows:
            if any(f.next_xid <= row.xact_id and row.at + grace < at for f, at in known):
                metrics.AUDIT_SEALED_LATE.inc()
                log.error(
                    "audit.sealed_late",
                    record_id=str(row.id),
                    detail="its transaction began long after its time: inserted behind the "
                    "service's back?",
                )


def _start_horizon(known: int | None, head: repo.ChainHead | None, xmax: int) -> int:
    """The horizon a pass scans from: this sealer's last full pass's, or (when it has just taken
    the lead) the chain head's, which its sealer had from a full pass too; 0 on a chain with no
    facts yet (a new database, or one sealed before migration 0007): one scan of everything.
    A head horizon beyond the database's own transaction ids (`xmax`) comes from another cluster
    (a dump restored here): trusting it would leave every new record unsealed, so scan all."""
    if known is not None:
        return known
    if head is None or head.facts is None:
        return 0
    if head.facts.horizon_xid > xmax:
        log.error(
            "audit.sealer_horizon_ahead",
            horizon_xid=head.facts.horizon_xid,
            xmax=xmax,
            detail="the chain's transaction ids are ahead of this database's (restored from a "
            "dump?): scanning every record once",
        )
        return 0
    return head.facts.horizon_xid


def _chain(
    rows: Sequence[sa.Row[Any]],
    head: repo.ChainHead | None,
    facts: chain.PassFacts,
    sealed_at: dt.datetime,
) -> list[chain.SealLink]:
    seq, prev_hash = (0, chain.GENESIS_HASH) if head is None else (head.seq, head.hash)
    links = []
    for row in rows:
        seq += 1
        item = chain.link(seq, prev_hash, sealed_at, facts, row)
        prev_hash = item.hash
        links.append(item)
    return links
