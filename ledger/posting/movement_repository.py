"""The SQL of money movement: the period lock, balance monitors and exchanges.

The posting engine's lock pipeline takes `PERIOD_SHARE` first and reads the period lock and the
monitors of its locked accounts in the same round trip (`ledger/posting/repository.py`)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.bulk import BulkWriter, json_rows
from ledger.core.locks import SINGLETON_KEY, ClientIdKind, LockClass, client_id_locks_sql
from ledger.core.pipeline import Statement
from ledger.posting.models import Account, Entry
from ledger.posting.monitors import MonitorState
from ledger.posting.movement_models import AccountMonitor, Exchange, PeriodLock

monitors_t = cast(sa.Table, AccountMonitor.__table__)
exchanges_t = cast(sa.Table, Exchange.__table__)
period_lock_t = cast(sa.Table, PeriodLock.__table__)
entries_t = cast(sa.Table, Entry.__table__)
accounts_t = cast(sa.Table, Account.__table__)

_PERIOD_LOCK_KEY = f"{int(LockClass.PERIOD_LOCK)}, {SINGLETON_KEY}"

_EXCHANGE_ID_LOCK = client_id_locks_sql(":ids", ClientIdKind.EXCHANGE)
# Taken first by every posting transaction (before any row lock, so that a transaction waiting
# for it holds nothing another posting needs); moving the lock takes it exclusively.
PERIOD_SHARE = Statement(f"SELECT pg_advisory_xact_lock_shared({_PERIOD_LOCK_KEY})")
# The transaction's time and the period lock, read once the locks are held (a fresh snapshot).
CLOCK_AND_PERIOD = Statement(
    f"SELECT clock_timestamp(), (SELECT max(locked_until) FROM {period_lock_t.name})",
    fetch=True,
)

MONITOR_NAMES = tuple(c.name for c in monitors_t.c)
_LOAD_MONITORS = (
    f"SELECT {', '.join(MONITOR_NAMES)} FROM {monitors_t.name} "
    "WHERE account_id = ANY(%s::uuid[]) ORDER BY account_id, id"
)


def period_of(rows: list[Any] | None) -> dt.datetime | None:
    if not rows or rows[0][1] is None:
        return None
    value: dt.datetime = rows[0][1]
    return value.astimezone(dt.UTC)


def monitors_statement(account_ids: Iterable[uuid.UUID]) -> Statement | None:
    wanted = sorted(set(account_ids))
    return Statement(_LOAD_MONITORS, (wanted,), fetch=True) if wanted else None


def monitors_of(rows: list[Any] | None) -> dict[uuid.UUID, list[MonitorState]]:
    found: dict[uuid.UUID, list[MonitorState]] = {}
    for row in rows or ():
        monitor = MonitorState(**dict(zip(MONITOR_NAMES, row, strict=True)))
        found.setdefault(monitor.account_id, []).append(monitor)
    return found


_UPDATE_MONITORS = f"""
    UPDATE {monitors_t.name} AS m SET trigger_count = v.trigger_count
      FROM jsonb_to_recordset(%s::jsonb) AS v(id uuid, trigger_count bigint)
     WHERE m.id = v.id
"""


def add_monitor_counts(writer: BulkWriter, monitors: Iterable[MonitorState]) -> None:
    """Queue the new trigger counts of the monitors that fired (their rows are guarded by
    their account's row lock, held by the posting)."""
    changed = [{"id": m.id, "trigger_count": m.trigger_count} for m in monitors if m.changed]
    if changed:
        writer.add(Statement(_UPDATE_MONITORS, (json_rows(changed),)))


async def last_posted_at(
    session: AsyncSession, account_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, dt.datetime]:
    """Each account's latest entry time (by the (account_id, posted_at) index)."""
    wanted = sorted(set(account_ids))
    if not wanted:
        return {}
    result = await session.execute(
        sa.text(
            "SELECT a.id, e.posted_at FROM unnest(CAST(:ids AS uuid[])) AS a(id) "
            "CROSS JOIN LATERAL (SELECT posted_at FROM entries WHERE account_id = a.id "
            "ORDER BY posted_at DESC LIMIT 1) AS e"
        ),
        {"ids": wanted},
    )
    return {row[0]: row[1].astimezone(dt.UTC) for row in result.all()}


# -- the period lock ----------------------------------------------------------------------------


async def lock_period(session: AsyncSession) -> tuple[dt.datetime, dt.datetime | None]:
    """Hold the period lock exclusively (every posting in flight has ended, none starts), then
    read the clock and the current lock."""
    await session.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PERIOD_LOCK_KEY})"))
    row = (await session.execute(sa.text(CLOCK_AND_PERIOD.sql))).one()
    now: dt.datetime = row[0]
    return now.astimezone(dt.UTC), period_of([tuple(row)])


async def read_period_lock(session: AsyncSession) -> tuple[dt.datetime, dt.datetime] | None:
    """The latest move: (locked_until, when it was made)."""
    row = (
        await session.execute(
            sa.select(period_lock_t.c.locked_until, period_lock_t.c.created_at)
            .order_by(period_lock_t.c.locked_until.desc())
            .limit(1)
        )
    ).one_or_none()
    if row is None:
        return None
    return row[0].astimezone(dt.UTC), row[1].astimezone(dt.UTC)


async def store_period_lock(
    session: AsyncSession, locked_until: dt.datetime, now: dt.datetime
) -> None:
    """Record a move, with the entries written so far (no posting is in flight: the caller
    holds the period lock exclusively)."""
    await session.execute(
        sa.text(
            f"INSERT INTO {period_lock_t.name} (locked_until, entries_watermark, created_at) "
            f"SELECT :until, coalesce(max(id), 0), :now FROM {entries_t.name}"
        ),
        {"until": locked_until, "now": now},
    )


# -- monitors -----------------------------------------------------------------------------------


async def lock_account(session: AsyncSession, account_id: uuid.UUID) -> bool:
    """Lock the account row (monitor changes then wait for postings on it, and they for us)."""
    found = await session.execute(
        sa.select(accounts_t.c.id).where(accounts_t.c.id == account_id).with_for_update()
    )
    return found.scalar_one_or_none() is not None


async def insert_monitor(session: AsyncSession, monitor: MonitorState) -> None:
    await session.execute(
        sa.insert(monitors_t).values(
            id=monitor.id,
            account_id=monitor.account_id,
            field=monitor.field,
            operator=monitor.operator,
            value=monitor.value,
            trigger_count=monitor.trigger_count,
            created_at=monitor.created_at,
        )
    )


async def count_monitors(session: AsyncSession, account_id: uuid.UUID, limit: int) -> int:
    """The account's monitors, counted up to `limit` (its index, at most `limit` entries)."""
    some = (
        sa.select(sa.literal(1)).where(monitors_t.c.account_id == account_id).limit(limit)
    ).subquery()
    return int((await session.execute(sa.select(sa.func.count()).select_from(some))).scalar_one())


async def list_monitors(
    session: AsyncSession, account_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[MonitorState]:
    query = sa.select(*[monitors_t.c[n] for n in MONITOR_NAMES]).where(
        monitors_t.c.account_id == account_id
    )
    if after is not None:
        query = query.where(monitors_t.c.id > after)
    rows = (await session.execute(query.order_by(monitors_t.c.id).limit(limit))).all()
    return [MonitorState(**dict(zip(MONITOR_NAMES, row, strict=True))) for row in rows]


async def delete_monitor(
    session: AsyncSession, account_id: uuid.UUID, monitor_id: uuid.UUID
) -> MonitorState | None:
    row = (
        await session.execute(
            sa.delete(monitors_t)
            .where(monitors_t.c.id == monitor_id, monitors_t.c.account_id == account_id)
            .returning(*[monitors_t.c[n] for n in MONITOR_NAMES])
        )
    ).one_or_none()
    return None if row is None else MonitorState(**dict(zip(MONITOR_NAMES, row, strict=True)))


# -- exchanges ----------------------------------------------------------------------------------


async def insert_exchange(
    session: AsyncSession,
    exchange_id: uuid.UUID,
    legs: tuple[uuid.UUID, uuid.UUID],
    rate: str,
    now: dt.datetime,
) -> None:
    await session.execute(
        sa.insert(exchanges_t).values(
            id=exchange_id,
            debit_transfer_id=legs[0],
            credit_transfer_id=legs[1],
            rate=rate,
            created_at=now,
        )
    )


async def load_exchange(
    session: AsyncSession, exchange_id: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID, str] | None:
    """The exchange's two legs and rate, after the exchange id's advisory lock. The period
    lock is taken shared before it, in the order every posting takes its locks (the engine
    takes it again for the legs: a shared lock held twice is still one holder)."""
    await session.execute(sa.text(PERIOD_SHARE.sql))
    await session.execute(sa.text(_EXCHANGE_ID_LOCK), {"ids": [exchange_id]})
    row = (
        await session.execute(
            sa.select(
                exchanges_t.c.debit_transfer_id,
                exchanges_t.c.credit_transfer_id,
                exchanges_t.c.rate,
            ).where(exchanges_t.c.id == exchange_id)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


async def account_exists(session: AsyncSession, account_id: uuid.UUID) -> bool:
    found = await session.execute(sa.select(accounts_t.c.id).where(accounts_t.c.id == account_id))
    return found.scalar_one_or_none() is not None
