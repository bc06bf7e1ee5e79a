"""All SQL of webhook deliveries: what the dispatcher records, what the delivery log reads.

Per endpoint and subject, only the oldest pending delivery has a `next_attempt_at`; those behind
it wait with NULL and are promoted when it is delivered or failed. So the due retries of an
endpoint are one range of a partial index, however many events wait behind a failing one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ledger.webhooks.models import WebhookDelivery, WebhookEndpoint

Executor = AsyncConnection | AsyncSession

deliveries_t = cast(sa.Table, WebhookDelivery.__table__)
endpoints_t = cast(sa.Table, WebhookEndpoint.__table__)
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One row as the dispatcher and the delivery log see it."""

    endpoint_id: uuid.UUID
    position: int
    event_id: uuid.UUID
    event_type: str
    subject: str
    status: str
    attempts: int
    next_attempt_at: dt.datetime | None
    deadline_at: dt.datetime
    last_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    envelope: str | None
    created_at: dt.datetime

    def public(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "subject": self.subject,
            "position": self.position,
            "status": self.status,
            "attempts": self.attempts,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "last_attempt_at": self.last_attempt_at,
            "next_attempt_at": self.next_attempt_at,
            "created_at": self.created_at,
        }


def _delivery(row: Any) -> Delivery:
    return Delivery(
        endpoint_id=row.endpoint_id,
        position=int(row.position),
        event_id=row.event_id,
        event_type=row.event_type,
        subject=row.subject,
        status=row.status,
        attempts=int(row.attempts),
        next_attempt_at=row.next_attempt_at,
        deadline_at=row.deadline_at,
        last_attempt_at=row.last_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        envelope=row.envelope,
        created_at=row.created_at,
    )


# -- the dispatcher ------------------------------------------------------------------------------


async def oldest_pending_by_subject(
    db: Executor, endpoint_id: uuid.UUID, subjects: Iterable[str]
) -> dict[str, int]:
    """The position of the oldest pending delivery of each of `subjects` that has one (one
    probe of the pending-subject index per subject)."""
    wanted = sorted(set(subjects))
    if not wanted:
        return {}
    query = (
        sa.select(deliveries_t.c.subject, sa.func.min(deliveries_t.c.position).label("oldest"))
        .where(deliveries_t.c.endpoint_id == endpoint_id)
        .where(deliveries_t.c.status == PENDING)
        .where(deliveries_t.c.subject == sa.any_(sa.cast(wanted, sa.ARRAY(sa.Text))))
        .group_by(deliveries_t.c.subject)
    )
    return {r.subject: int(r.oldest) for r in await db.execute(query)}


async def advance_cursor(
    db: Executor, endpoint_id: uuid.UUID, *, expected: int, to: int, now: dt.datetime
) -> bool:
    """Move the cursor from `expected` to `to`; False when it is no longer `expected` (a replay
    moved it meanwhile, or the endpoint was deleted): the caller then records nothing."""
    result = await db.execute(
        sa.update(endpoints_t)
        .where(endpoints_t.c.id == endpoint_id)
        .where(endpoints_t.c.cursor == expected)
        .where(endpoints_t.c.deleted_at.is_(None))
        .values(cursor=to)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


_UPSERT_COLUMNS = (
    "event_id",
    "event_type",
    "subject",
    "status",
    "attempts",
    "next_attempt_at",
    "deadline_at",
    "last_attempt_at",
    "last_status_code",
    "last_error",
    "envelope",
    "created_at",
    "updated_at",
)


async def upsert(db: Executor, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the deliveries of a batch; a row already there (a replay takes an event again)
    is replaced, which is what sending it again means."""
    if not rows:
        return
    statement = pg_insert(deliveries_t)
    statement = statement.on_conflict_do_update(
        index_elements=[deliveries_t.c.endpoint_id, deliveries_t.c.position],
        set_={name: statement.excluded[name] for name in _UPSERT_COLUMNS},
    )
    await db.execute(statement, list(rows))


async def due(db: Executor, endpoint_id: uuid.UUID, now: dt.datetime, limit: int) -> list[Delivery]:
    """Pending deliveries whose next attempt is due, the longest overdue first."""
    query = (
        sa.select(deliveries_t)
        .where(deliveries_t.c.endpoint_id == endpoint_id)
        .where(deliveries_t.c.status == PENDING)
        .where(deliveries_t.c.next_attempt_at.is_not(None))
        .where(deliveries_t.c.next_attempt_at <= now)
        .order_by(deliveries_t.c.next_attempt_at)
        .limit(limit)
    )
    return [_delivery(r) for r in await db.execute(query)]


async def set_waiting(db: Executor, endpoint_id: uuid.UUID, positions: Sequence[int]) -> None:
    """Take the schedule away from deliveries found behind an older pending one of their
    subject (a replay can put one there): they wait to be promoted."""
    if positions:
        await db.execute(
            sa.update(deliveries_t)
            .where(deliveries_t.c.endpoint_id == endpoint_id)
            .where(
                deliveries_t.c.position
                == sa.any_(sa.cast(list(positions), sa.ARRAY(sa.BigInteger)))
            )
            .values(next_attempt_at=None)
        )


_RECORD_ATTEMPTS = sa.text(
    """
    UPDATE webhook_deliveries AS d
    SET attempts = a.attempts,
        status = a.status,
        next_attempt_at = a.next_attempt_at,
        last_attempt_at = a.last_attempt_at,
        last_status_code = a.last_status_code,
        last_error = a.last_error,
        updated_at = a.last_attempt_at,
        envelope = CASE WHEN a.status = 'delivered' THEN NULL ELSE d.envelope END
    FROM unnest(
        CAST(:positions AS bigint[]), CAST(:attempts AS integer[]), CAST(:statuses AS text[]),
        CAST(:next_attempts AS timestamptz[]), CAST(:attempted AS timestamptz[]),
        CAST(:codes AS integer[]), CAST(:errors AS text[])
    ) AS a(position, attempts, status, next_attempt_at, last_attempt_at, last_status_code,
           last_error)
    WHERE d.endpoint_id = :endpoint_id AND d.position = a.position AND d.status = 'pending'
    """
)


async def record_attempts(
    db: Executor, endpoint_id: uuid.UUID, attempts: Sequence[tuple[int, dict[str, Any]]]
) -> None:
    """The outcomes of a step's retries, `(position, plan.after_retry(...))` each, in one
    statement: a pending delivery only (a replay or a retry by hand may have moved it on)."""
    if not attempts:
        return
    await db.execute(
        _RECORD_ATTEMPTS,
        {
            "endpoint_id": endpoint_id,
            "positions": [position for position, _ in attempts],
            "attempts": [v["attempts"] for _, v in attempts],
            "statuses": [v.get("status", PENDING) for _, v in attempts],
            "next_attempts": [v.get("next_attempt_at") for _, v in attempts],
            "attempted": [v["last_attempt_at"] for _, v in attempts],
            "codes": [v["last_status_code"] for _, v in attempts],
            "errors": [v["last_error"] for _, v in attempts],
        },
    )


async def promote_next(
    db: Executor, endpoint_id: uuid.UUID, subjects: Iterable[str], now: dt.datetime
) -> None:
    """Schedule the oldest pending delivery of each subject (now), if it waits unscheduled: one
    statement for every subject."""
    wanted = sorted(set(subjects))
    if not wanted:
        return
    oldest = (
        sa.select(sa.func.min(deliveries_t.c.position).label("position"))
        .where(deliveries_t.c.endpoint_id == endpoint_id)
        .where(deliveries_t.c.status == PENDING)
        .where(deliveries_t.c.subject == sa.any_(sa.cast(wanted, sa.ARRAY(sa.Text))))
        .group_by(deliveries_t.c.subject)
        .subquery()
    )
    await db.execute(
        sa.update(deliveries_t)
        .where(deliveries_t.c.endpoint_id == endpoint_id)
        .where(deliveries_t.c.position == oldest.c.position)
        .where(deliveries_t.c.next_attempt_at.is_(None))
        .values(next_attempt_at=now)
    )


async def count_pending(db: Executor, endpoint_id: uuid.UUID, cap: int) -> int:
    inner = (
        sa.select(deliveries_t.c.position)
        .where(deliveries_t.c.endpoint_id == endpoint_id)
        .where(deliveries_t.c.status == PENDING)
        .limit(cap)
        .subquery()
    )
    return int((await db.execute(sa.select(sa.func.count()).select_from(inner))).scalar_one())


# -- the delivery log ------------------------------------------------------------------------------


async def list_page(
    db: Executor,
    endpoint_id: uuid.UUID,
    *,
    status: str | None,
    after: int | None,
    limit: int,
) -> list[Delivery]:
    """The endpoint's deliveries in feed order, keyset-paged by position (the primary key, or
    the status index with a status)."""
    query = (
        sa.select(deliveries_t)
        .where(deliveries_t.c.endpoint_id == endpoint_id)
        .order_by(deliveries_t.c.position)
        .limit(limit)
    )
    if status is not None:
        query = query.where(deliveries_t.c.status == status)
    if after is not None:
        query = query.where(deliveries_t.c.position > after)
    return [_delivery(r) for r in await db.execute(query)]


async def by_event(
    db: Executor, endpoint_id: uuid.UUID, event_id: uuid.UUID, *, for_update: bool = False
) -> Delivery | None:
    """The newest delivery of that event to that endpoint (one, unless events were replayed
    from a feed with duplicate ids, which the outbox does not make)."""
    query = (
        sa.select(deliveries_t)
        .where(deliveries_t.c.endpoint_id == endpoint_id)
        .where(deliveries_t.c.event_id == event_id)
        .order_by(deliveries_t.c.position.desc())
        .limit(1)
    )
    if for_update:
        query = query.with_for_update()
    row = (await db.execute(query)).first()
    return None if row is None else _delivery(row)


async def reopen(
    db: Executor, endpoint_id: uuid.UUID, position: int, *, now: dt.datetime, deadline: dt.datetime
) -> None:
    """A failed delivery pending again: due now, retried until `deadline`."""
    await db.execute(
        sa.update(deliveries_t)
        .where(deliveries_t.c.endpoint_id == endpoint_id)
        .where(deliveries_t.c.position == position)
        .values(status=PENDING, next_attempt_at=now, deadline_at=deadline, updated_at=now)
    )


# -- retention -------------------------------------------------------------------------------------


async def delete_finished_before(db: Executor, cutoff: dt.datetime, limit: int) -> int:
    """Delete up to `limit` delivered or failed rows last changed before `cutoff`."""
    oldest = (
        sa.select(deliveries_t.c.endpoint_id, deliveries_t.c.position)
        .where(deliveries_t.c.status != PENDING)
        .where(deliveries_t.c.updated_at < cutoff)
        .limit(limit)
    )
    result = await db.execute(
        sa.delete(deliveries_t).where(
            sa.tuple_(deliveries_t.c.endpoint_id, deliveries_t.c.position).in_(oldest)
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def delete_of_endpoint(db: Executor, endpoint_id: uuid.UUID, limit: int) -> int:
    some = (
        sa.select(deliveries_t.c.position)
        .where(deliveries_t.c.endpoint_id == endpoint_id)
        .limit(limit)
    )
    result = await db.execute(
        sa.delete(deliveries_t)
        .where(deliveries_t.c.endpoint_id == endpoint_id)
        .where(deliveries_t.c.position.in_(some))
    )
    return int(getattr(result, "rowcount", 0) or 0)


# -- health (the console) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Health:
    pending: int  # counted up to the cap
    failed: int  # counted up to the cap
    last_delivered_at: dt.datetime | None
    last_error: str | None  # of the most recent failed attempt still pending
    oldest_pending_at: dt.datetime | None


async def health(db: Executor, endpoint_id: uuid.UUID, cap: int) -> Health:
    """Each figure one bounded read of an index of the endpoint's deliveries."""

    def count(status: str) -> Any:
        inner = (
            sa.select(deliveries_t.c.position)
            .where(deliveries_t.c.endpoint_id == endpoint_id)
            .where(deliveries_t.c.status == status)
            .limit(cap)
            .subquery()
        )
        return sa.select(sa.func.count()).select_from(inner).scalar_subquery()

    def newest(status: str, column: Any) -> Any:
        return (
            sa.select(column)
            .where(deliveries_t.c.endpoint_id == endpoint_id)
            .where(deliveries_t.c.status == status)
            .order_by(deliveries_t.c.position.desc())
            .limit(1)
            .scalar_subquery()
        )

    oldest_pending = (
        sa.select(deliveries_t.c.created_at)
        .where(deliveries_t.c.endpoint_id == endpoint_id)
        .where(deliveries_t.c.status == PENDING)
        .order_by(deliveries_t.c.position)
        .limit(1)
        .scalar_subquery()
    )
    row = (
        await db.execute(
            sa.select(
                count(PENDING).label("pending"),
                count(FAILED).label("failed"),
                newest(DELIVERED, deliveries_t.c.updated_at).label("last_delivered_at"),
                newest(PENDING, deliveries_t.c.last_error).label("last_error"),
                oldest_pending.label("oldest_pending_at"),
            )
        )
    ).one()
    return Health(
        pending=int(row.pending),
        failed=int(row.failed),
        last_delivered_at=row.last_delivered_at,
        last_error=row.last_error,
        oldest_pending_at=row.oldest_pending_at,
    )
