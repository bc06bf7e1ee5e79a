"""The expiry worker: pending transfers past their timeout are expired, each in its own
transaction, under the same locks as a void (so two workers at once never release one hold twice).

A hold whose expiry fails (its account row locked elsewhere past the lock timeout, a state that
raises) fails alone: it is logged with its id (`transfer.expiry_failed`), counted
(`ledger_expiry_failures_total`) and put in the worker's retry book, and the step goes on with the
others. An expiry waits for a lock at most EXPIRY_LOCK_TIMEOUT_MS, far less than a request may,
so a hold whose row stays locked costs the holds after it little. Holds in the book are left out
of the main step, which fetches past them, and are retried by a job of their own after a capped,
jittered backoff: a hold that keeps failing neither comes first every time nor makes the others
wait for its lock timeouts again. The book lives in the worker process only: after a restart
every due hold is simply tried again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.core import limits
from ledger.core.backoff import jittered_backoff_ms
from ledger.core.context import Actor, WriteContext
from ledger.core.db import run_in_transaction, sqlstate
from ledger.core.errors import ServiceUnavailable
from ledger.posting.repository import due_pending_ids
from ledger.worker import repository as worker_repo
from observability import metrics
from transfers.service import expire_one

log = structlog.get_logger("ledger.worker.expiry")


@dataclass(slots=True)
class _Retry:
    failures: int  # consecutive failed attempts
    retry_at: float  # time.monotonic() from which it may be tried again


class ExpiryRetries:
    """Holds whose expiry failed, with when each may be tried again. Bounded: when full, the
    entry kept longest makes room (that hold is then only tried sooner, by the main step)."""

    def __init__(
        self,
        *,
        entries_max: int | None = None,
        initial_ms: int | None = None,
        max_ms: int | None = None,
    ) -> None:
        self.entries_max = limits.EXPIRY_RETRY_ENTRIES_MAX if entries_max is None else entries_max
        self.initial_ms = (
            limits.EXPIRY_RETRY_BACKOFF_INITIAL_MS if initial_ms is None else initial_ms
        )
        self.max_ms = limits.EXPIRY_RETRY_BACKOFF_MAX_MS if max_ms is None else max_ms
        self.entries: dict[uuid.UUID, _Retry] = {}

    def __contains__(self, transfer_id: object) -> bool:
        return transfer_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def ids(self) -> list[uuid.UUID]:
        return list(self.entries)

    def ready(self, now: float) -> list[uuid.UUID]:
        """The holds whose wait is over at `now`, the longest overdue first."""
        due = [
            (entry.retry_at, tid) for tid, entry in self.entries.items() if entry.retry_at <= now
        ]
        return [tid for _, tid in sorted(due)]

    def failed(self, transfer_id: uuid.UUID, now: float) -> float:
        """Record one more failure; returns the seconds until the hold may be tried again."""
        entry = self.entries.get(transfer_id)
        failures = 1 if entry is None else entry.failures + 1
        if entry is None and len(self.entries) >= self.entries_max:
            del self.entries[next(iter(self.entries))]
        wait_seconds = (
            jittered_backoff_ms(failures, initial_ms=self.initial_ms, max_ms=self.max_ms) / 1000
        )
        self.entries[transfer_id] = _Retry(failures, now + wait_seconds)
        metrics.EXPIRY_RETRIES_WAITING.set(len(self.entries))
        return wait_seconds

    def failures(self, transfer_id: uuid.UUID) -> int:
        entry = self.entries.get(transfer_id)
        return 0 if entry is None else entry.failures

    def forget(self, transfer_id: uuid.UUID) -> None:
        if self.entries.pop(transfer_id, None) is not None:
            metrics.EXPIRY_RETRIES_WAITING.set(len(self.entries))


async def expire_step(
    sessionmaker: async_sessionmaker[AsyncSession], retries: ExpiryRetries | None = None
) -> int:
    """Expire up to EXPIRY_BATCH_SIZE due holds, in due order, leaving out those in `retries`
    (the retry job's); returns how many this step expired. A failing hold goes into `retries`
    (a book of this step alone when None: it is then tried again by the next step)."""
    book = ExpiryRetries() if retries is None else retries
    ctx = WriteContext(actor=Actor.system("expiry"))
    batch_size = limits.EXPIRY_BATCH_SIZE
    # Fetched past the book's holds (at most EXPIRY_RETRY_ENTRIES_MAX more rows): holds waiting
    # for their retry never take the place of a due one.
    fetch = batch_size + len(book)

    async def due(session: AsyncSession) -> list[uuid.UUID]:
        return await due_pending_ids(session, ctx.now, fetch)

    batch = [tid for tid in await run_in_transaction(sessionmaker, due) if tid not in book]
    expired = 0
    for transfer_id in batch[:batch_size]:
        if await _expire_alone(sessionmaker, transfer_id, ctx, book):
            expired += 1
    if expired:
        log.info("transfer.expired_batch", count=expired)
    return expired


async def expire_retry_step(
    sessionmaker: async_sessionmaker[AsyncSession], retries: ExpiryRetries
) -> int:
    """Try again the holds in `retries` whose backoff is over (up to EXPIRY_BATCH_SIZE); a hold
    that expires, or needs it no longer (posted, voided meanwhile), leaves the book."""
    ctx = WriteContext(actor=Actor.system("expiry"))
    expired = 0
    for transfer_id in retries.ready(time.monotonic())[: limits.EXPIRY_BATCH_SIZE]:
        failures = retries.failures(transfer_id)
        if await _expire_alone(sessionmaker, transfer_id, ctx, retries):
            expired += 1
            log.info("transfer.expired_on_retry", transfer_id=str(transfer_id), failures=failures)
    return expired


async def _expire_alone(
    sessionmaker: async_sessionmaker[AsyncSession],
    transfer_id: uuid.UUID,
    ctx: WriteContext,
    retries: ExpiryRetries,
) -> bool:
    """Expire one hold in its own transaction. True when this released it; a failure is this
    hold's alone (logged, counted, booked for a retry), except the database being away, which
    ends the step: no hold is to blame, and the job's loop waits before trying again."""

    async def one(session: AsyncSession) -> bool:
        # Not the requests' long lock wait: a hold whose row stays locked fails soon and is
        # retried later, instead of keeping the holds after it waiting.
        await worker_repo.set_local_lock_timeout(session, limits.EXPIRY_LOCK_TIMEOUT_MS)
        return await expire_one(session, transfer_id, ctx.at_now())

    try:
        expired = await run_in_transaction(sessionmaker, one)
    except ServiceUnavailable:
        raise
    except Exception as exc:  # a worker step must keep running: this hold is retried later
        wait_seconds = retries.failed(transfer_id, time.monotonic())
        metrics.EXPIRY_FAILURES.inc()
        log.warning(
            "transfer.expiry_failed",
            transfer_id=str(transfer_id),
            failures=retries.failures(transfer_id),
            retry_in_seconds=round(wait_seconds, 3),
            error=type(exc).__name__,
            sqlstate=sqlstate(exc),
            exc_info=True,
        )
        return False
    retries.forget(transfer_id)
    return expired
