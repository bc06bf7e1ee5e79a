"""Wake the relay after commits, from outside the transactions that wrote the events.

Why not `NOTIFY` inside the business transaction: PostgreSQL queues notifications under one
lock per database taken at commit, so every transaction that notifies commits one after the
other, and with a notification in every posting that became a queue in front of commit.
Measured without it, the single-transfer bench gained 5 to 8 % on two cores; on more cores the
serialisation would cost more.

So the API process tells the relay after the fact: every commit that wrote events pokes the
notifier, which sends one `pg_notify` on a pooled connection in autocommit, at most once per
`interval_seconds` however many commits poked it meanwhile. A lost or failed notification
costs nothing but latency: the relay also polls (`limits.OUTBOX_POLL_INTERVAL_SECONDS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.core import limits
from outbox.writer import NOTIFIER_SESSION_KEY, NOTIFY_CHANNEL

log = structlog.get_logger("ledger.outbox.notifier")

__all__ = ["NOTIFIER_SESSION_KEY", "OutboxNotifier"]
_NOTIFY = sa.text("SELECT pg_notify(:channel, '')")


class OutboxNotifier:
    def __init__(
        self, engine: AsyncEngine, interval_seconds: float = limits.OUTBOX_NOTIFY_INTERVAL_SECONDS
    ) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.interval_seconds = interval_seconds
        self.pending = False
        self.task: asyncio.Task[None] | None = None
        self.in_flight: asyncio.Future[None] | None = None  # the notification being sent

    def poke(self) -> None:
        """After a commit that wrote events (an `after_commit` callback)."""
        self.pending = True
        if self.task is None or self.task.done():
            # A clean context: the wake-up belongs to no request's trace or log ids.
            self.task = asyncio.get_running_loop().create_task(
                self._send(), context=contextvars.Context()
            )

    async def _send(self) -> None:
        while self.pending:
            self.pending = False
            # Its own task, shielded: a close() that cancels this loop lets a notification in
            # flight finish and return its connection (cancelled inside the connection's context,
            # SQLAlchemy cannot give it back to the pool, and it is left for the GC).
            self.in_flight = asyncio.ensure_future(self._notify_once())
            await asyncio.shield(self.in_flight)
            await asyncio.sleep(self.interval_seconds)

    async def _notify_once(self) -> None:
        try:
            async with self.engine.connect() as connection:
                await connection.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL})
        except Exception as exc:  # the relay's poll still finds the events
            log.warning("outbox.notify_failed", error=type(exc).__name__)

    async def close(self) -> None:
        self.pending = False
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.in_flight is not None:
            with contextlib.suppress(Exception):
                await self.in_flight
