"""The period lock and imported transfers: when an entry may be posted.

No entry is posted at or before the period lock (`locked_until`): checked here on the locked
state, and refused by a trigger on `entries` whatever path wrote it. An imported transfer is
posted at its `imported_at`, which may not be in the future (live transfers would then post
before it), nor inside the locked period, nor older than either account's last entry (per
account, `posted_at` never decreases as the sequence grows).

Moving the lock takes the PERIOD_LOCK advisory lock exclusively while every posting transaction
holds it shared, and the new lock may not be later than the database clock read under it: every
posting that commits after the move reads its clock after it, so no live transfer can be caught
inside the period that was just closed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit.writer import AuditEntry, write_audit
from ledger.core.context import WriteContext
from ledger.core.db import after_commit
from ledger.core.errors import (
    ImportedInFuture,
    ImportedOutOfOrder,
    PeriodLockBackwards,
    PeriodLocked,
    PeriodLockInFuture,
)
from ledger.posting import movement_repository as repo

log = structlog.get_logger("ledger.posting.periods")


def check_open(posted_at: dt.datetime, locked_until: dt.datetime | None) -> None:
    if locked_until is not None and posted_at <= locked_until:
        raise PeriodLocked(
            f"nothing may be posted at or before {locked_until.isoformat()} "
            f"(asked {posted_at.isoformat()})"
        )


def check_import(
    imported_at: dt.datetime,
    now: dt.datetime,
    accounts: tuple[uuid.UUID, uuid.UUID],
    last_posted: dict[uuid.UUID, dt.datetime],
) -> None:
    if imported_at > now:
        raise ImportedInFuture(
            f"imported_at {imported_at.isoformat()} is after now ({now.isoformat()})"
        )
    for account_id in accounts:
        last = last_posted.get(account_id)
        if last is not None and imported_at < last:
            raise ImportedOutOfOrder(
                f"account {account_id} has an entry posted at {last.isoformat()}, after "
                f"imported_at {imported_at.isoformat()}"
            )


@dataclass(frozen=True, slots=True)
class PeriodLockState:
    locked_until: dt.datetime | None
    updated_at: dt.datetime | None


async def get_period_lock(session: AsyncSession) -> PeriodLockState:
    found = await repo.read_period_lock(session)
    return PeriodLockState(None, None) if found is None else PeriodLockState(*found)


async def set_period_lock(
    session: AsyncSession, locked_until: dt.datetime, ctx: WriteContext
) -> tuple[PeriodLockState, bool]:
    """Move the lock forward to `locked_until`; (the lock, whether it changed). The same value
    again is no change; an earlier one is PeriodLockBackwards; a later one than now,
    PeriodLockInFuture."""
    now, current = await repo.lock_period(session)
    if current is not None and locked_until < current:
        raise PeriodLockBackwards(
            f"the period is locked until {current.isoformat()}; it only moves forward"
        )
    if current is not None and locked_until == current:
        state = await get_period_lock(session)
        return state, False
    if locked_until > now:
        raise PeriodLockInFuture(
            f"locked_until {locked_until.isoformat()} is after now ({now.isoformat()})"
        )
    await repo.store_period_lock(session, locked_until, now)
    after_commit(
        session,
        lambda: log.info(
            "period_lock.moved",
            locked_until=locked_until.isoformat(),
            previous=None if current is None else current.isoformat(),
        ),
    )
    await write_audit(
        session,
        [
            AuditEntry(
                action="period_lock.set",
                object_type="period_lock",
                object_id="period_lock",
                data={"request": {"locked_until": locked_until}, "previous": current},
            )
        ],
        ctx.at(now),
    )
    return PeriodLockState(locked_until, now), True
