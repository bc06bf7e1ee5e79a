"""Reads that may lag, served by a standby (LEDGER_DATABASE_READ_URL), never older than a write
acknowledged before they arrived.

Before a read runs on the standby, it learns a WAL position of the primary taken after the read
arrived (one shared query of `pg_current_wal_*_lsn()` for every read waiting at that moment), and
the standby's first statement checks that it has replayed that far. Every write this client (or
any client) saw acknowledged before the read began has its commit record below that position: a
commit is acknowledged once it is flushed (with `synchronous_commit = off`, once inserted, and
the insert position is taken instead). In READ COMMITTED, the read's next statements take their
snapshots after the check, so they see those commits.

A standby behind that position gets a short wait (it is usually a few milliseconds behind under
load: it replays what the primary flushed); a standby still behind after it, or away, sends the
read to the primary. So the read URL may name an asynchronous standby, or one Patroni has just
dropped from the synchronous set: reads stay right, only their share on the standby drops
(`ledger_db_reads_total{target}` says where reads went).

Writes, reads that return an ETag (an `If-Match` precondition is judged against the primary),
idempotent replays and what a write returns never come here: they run on the primary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.core import limits
from ledger.core.db import run_in_transaction
from ledger.core.errors import ServiceUnavailable
from ledger.core.shared_read import SharedRead
from observability import metrics

T = TypeVar("T")

PRIMARY_POSITION_SQL = sa.text(
    "SELECT (CASE WHEN current_setting('synchronous_commit') = 'off' "
    "THEN pg_current_wal_insert_lsn() ELSE pg_current_wal_flush_lsn() END)::text"
)
# On a server that is a primary itself (a standby promoted, the read URL now naming the new
# primary) every commit it has is in its own WAL: its insert position stands for replay.
REPLAYED_SQL = sa.text(
    "SELECT COALESCE(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_insert_lsn() END >= CAST(:position AS pg_lsn), false)"
)


class StandbyBehind(Exception):
    """The standby has not replayed the primary's position yet: the read goes elsewhere."""


class ReadReplica:
    """Routes `read(work)` to the standby when it has caught up, else to the primary."""

    def __init__(
        self,
        primary: async_sessionmaker[AsyncSession],
        standby: async_sessionmaker[AsyncSession],
        *,
        wait_ms: int = limits.READ_FENCE_WAIT_MS,
    ) -> None:
        self.primary = primary
        self.standby = standby
        self.wait_ms = wait_ms
        self._position = SharedRead[str](limits.READ_FENCE_INTERVAL_SECONDS)

    async def read(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        position = await self._position.get(self._primary_position)
        try:
            result = await run_in_transaction(self.standby, self._fenced(work, position))
        except StandbyBehind:
            metrics.DB_READS.labels(target="primary_standby_behind").inc()
        except ServiceUnavailable:
            metrics.DB_READS.labels(target="primary_standby_away").inc()
        else:
            metrics.DB_READS.labels(target="standby").inc()
            return result
        return await run_in_transaction(self.primary, work)

    async def _primary_position(self) -> str:
        async def position(session: AsyncSession) -> str:
            return str((await session.execute(PRIMARY_POSITION_SQL)).scalar_one())

        return await run_in_transaction(self.primary, position)

    def _fenced(
        self, work: Callable[[AsyncSession], Awaitable[T]], position: str
    ) -> Callable[[AsyncSession], Awaitable[T]]:
        async def fenced(session: AsyncSession) -> T:
            await self._wait_for_replay(session, position)
            return await work(session)

        return fenced

    async def _wait_for_replay(self, session: AsyncSession, position: str) -> None:
        """Ask the standby until it has replayed `position`, sleeping 1, 2, 4, ... ms between
        asks, for at most `wait_ms` in all; then give up (`StandbyBehind`)."""
        waited_ms, sleep_ms = 0, 1
        while True:
            replayed = (await session.execute(REPLAYED_SQL, {"position": position})).scalar_one()
            if replayed:
                return
            if waited_ms >= self.wait_ms:
                raise StandbyBehind(position)
            await asyncio.sleep(sleep_ms / 1000)
            waited_ms += sleep_ms
            sleep_ms = max(1, min(sleep_ms * 2, self.wait_ms - waited_ms))
