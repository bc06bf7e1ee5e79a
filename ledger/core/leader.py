"""One active instance of a job per database: a session-level advisory lock on a direct connection.

Shared by the jobs that must run once per database (the outbox relay; a new delivery job takes
the same road), so that each of them fails over the same way:

- the lock lives on one connection of its own, from an engine without a pool, on
  LEDGER_DATABASE_DIRECT_URL (never a transaction pooler, which would hand the session, and the
  lock on it, to other clients);
- the job's work runs on that same connection, so it cannot outlive the lock: when the
  connection fails, the work fails with it;
- any database error drops the connection (the lock ends with its session) and raises
  `ServiceUnavailable`; the worker's loop then waits with a backoff and the next step connects
  again, through libpq's host list, to whichever server is the primary by then. A standby
  worker's next try takes the lock once the old holder's session is gone: its process died, its
  connection broke, or the old primary it held it on is no more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.core.db import direct_engine
from ledger.core.errors import ServiceUnavailable
from ledger.core.locks import SINGLETON_KEY, LockClass
from ledger.core.settings import Settings

T = TypeVar("T")
log = structlog.get_logger("ledger.leader")


class Leadership:
    """The lock `(lock_class, SINGLETON_KEY)` held by this process's `name` job, and the
    connection it lives on. `lead()` tries to get it (at most one statement when already
    held: none); `run(work)` runs `work(conn)` in one transaction on that connection."""

    def __init__(self, settings: Settings, name: str, lock_class: LockClass) -> None:
        self.settings = settings
        self.name = name
        self.lock_class = lock_class
        self._engine: AsyncEngine | None = None
        self._conn: AsyncConnection | None = None
        self._leading = False

    @property
    def leading(self) -> bool:
        return self._leading

    async def lead(self) -> bool:
        """True when this process holds the lock (now or already)."""
        if self._leading:
            return True
        if self._engine is None:
            self._engine = direct_engine(self.settings, self.name)
        try:
            if self._conn is None:
                self._conn = await self._engine.connect()
            async with self._conn.begin():
                result = await self._conn.execute(
                    sa.select(sa.func.pg_try_advisory_lock(int(self.lock_class), SINGLETON_KEY))
                )
                self._leading = bool(result.scalar())
        except DBAPIError as exc:
            await self.drop()
            raise ServiceUnavailable(f"{self.name} cannot reach the database") from exc
        return self._leading

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work(conn)` in one transaction on the lock holder's connection. Any database
        failure gives the lock up (the connection is closed) and is `ServiceUnavailable`: the
        next `lead()` starts over, on whichever server is the primary then."""
        conn = self._conn
        if conn is None or not self._leading:
            raise ServiceUnavailable(f"{self.name} does not hold its lock")
        try:
            async with conn.begin():
                return await work(conn)
        except DBAPIError as exc:
            await self.drop()
            raise ServiceUnavailable(f"{self.name} lost its database connection") from exc

    async def drop(self) -> None:
        """Close the connection for good (and so end the lock's session)."""
        conn, self._conn, self._leading = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        """Shutdown: release the lock (a standby takes over at its next try), then close."""
        if self._conn is not None and self._leading:
            with contextlib.suppress(Exception):
                async with self._conn.begin():
                    await self._conn.execute(
                        sa.select(sa.func.pg_advisory_unlock(int(self.lock_class), SINGLETON_KEY))
                    )
        await self.drop()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
