"""All SQL of the producing side of events: the relay, the HTTP feed, retention and status.

Feed positions are handed out by exactly one relay at a time (it holds RELAY_LOCK), in the
same transaction that marks the rows published, as max(position) + 1, + 2, ... so they are
gapless and commit in increasing order. That is what lets the feed page by position without
ever skipping a row whose transaction committed late behind a higher insert id.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ledger.core.locks import SINGLETON_KEY, LockClass
from outbox.models import OutboxEvent

# The single active relay's session lock (ledger/core/locks.py).
RELAY_LOCK = (int(LockClass.OUTBOX_RELAY), SINGLETON_KEY)

Executor = AsyncConnection | AsyncSession

events_t = cast(sa.Table, OutboxEvent.__table__)
# The envelope's stored text (a `json` column keeps it): read as text, never through a JSON
# parser, which would reprint numbers in the metadata it carries.
envelope_text = sa.cast(events_t.c.envelope, sa.Text).label("envelope")


@dataclass(frozen=True, slots=True)
class UnpublishedEvent:
    id: int
    subject: str
    envelope: bytes  # as the writer encoded it: the Kafka record's value, unparsed
    traceparent: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    backlog: int
    backlog_capped: bool  # the count stopped at its cap: the backlog is at least `backlog`
    oldest_age_seconds: float
    last_position: int


async def try_relay_lock(conn: AsyncConnection) -> bool:
    """Session-level: held until released or until the connection ends (a killed relay's
    backend exits and PostgreSQL frees the lock, so a standby takes over)."""
    result = await conn.execute(sa.select(sa.func.pg_try_advisory_lock(*RELAY_LOCK)))
    return bool(result.scalar())


async def release_relay_lock(conn: AsyncConnection) -> None:
    await conn.execute(sa.select(sa.func.pg_advisory_unlock(*RELAY_LOCK)))


async def listen(conn: psycopg.AsyncConnection[Any], channel: str) -> None:
    """LISTEN on a dedicated autocommit connection: the relay's wake-up bell."""
    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


async def fetch_unpublished(db: Executor, limit: int) -> list[UnpublishedEvent]:
    """The oldest unpublished rows by insert id (the partial index on id WHERE position IS NULL
    serves this). A row whose transaction is still open is invisible now and is taken by a later
    step, whatever its id: nothing here remembers a "last id"."""
    query = (
        sa.select(
            events_t.c.id,
            events_t.c.subject,
            envelope_text,
            events_t.c.traceparent,
            events_t.c.created_at,
        )
        .where(events_t.c.position.is_(None))
        .order_by(events_t.c.id)
        .limit(limit)
    )
    return [
        UnpublishedEvent(r.id, r.subject, r.envelope.encode(), r.traceparent, r.created_at)
        for r in await db.execute(query)
    ]


MARK_PUBLISHED = """
WITH base AS (
    SELECT coalesce(max(position), 0) AS last FROM outbox_events
), ordered AS (
    SELECT o.id, row_number() OVER (ORDER BY o.id) AS rank
    FROM unnest(CAST(:ids AS bigint[])) AS wanted(id)
    JOIN outbox_events AS o ON o.id = wanted.id
    WHERE coalesce(o.position, -1) = -1
)
UPDATE outbox_events AS o
SET position = base.last + ordered.rank, published_at = :now
FROM base, ordered
WHERE o.id = ordered.id
"""


async def mark_published(db: Executor, ids: list[int], now: dt.datetime) -> int:
    """Give the rows the next feed positions in id order and stamp them published. Only the lock
    holder calls this; the unique index on position would refuse a second writer anyway.

    The rows are reached from the ids, by primary key, whatever the statistics say. Written as
    `position IS NULL`, the test let the planner scan every unpublished row through the position
    index (its NULLs) and filter the ids: with statistics taken while the backlog was small that
    looked like one row, and under a burst of batches it made each mark cost in proportion to
    the backlog (60 ms for 500 rows), so the relay fell further behind with every step. The
    COALESCE form matches no index, which leaves the primary key."""
    if not ids:
        return 0
    result = await db.execute(
        sa.text(MARK_PUBLISHED),
        {"ids": ids, "now": now},
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def feed_page(db: Executor, after: int, limit: int) -> list[tuple[int, bytes]]:
    """(position, envelope as stored) of the events after `after`, in position order."""
    query = (
        sa.select(events_t.c.position, envelope_text)
        .where(events_t.c.position > after)
        .order_by(events_t.c.position)
        .limit(limit)
    )
    return [(int(r.position), r.envelope.encode()) for r in await db.execute(query)]


async def last_feed_position(db: Executor) -> int:
    """The feed's head: the position of the newest event in the feed (0 before the first). A
    reader that starts here sees exactly the events fed after this call (webhook endpoints do)."""
    value = (await db.execute(sa.select(sa.func.max(events_t.c.position)))).scalar()
    return 0 if value is None else int(value)


async def first_retained_position(db: Executor) -> int | None:
    value = (await db.execute(sa.select(sa.func.min(events_t.c.position)))).scalar()
    return None if value is None else int(value)


async def status(db: Executor, *, backlog_count_max: int, timeout_ms: int) -> OutboxStatus:
    """The backlog counted up to `backlog_count_max` rows (`backlog_capped` when it reached it:
    a floor), the age of the oldest of them, and the last feed position.

    Callable by an unauthenticated scrape, so its cost is bounded whatever the backlog: the
    partial index on unpublished ids is read in id order up to the cap (the lowest ids are the
    oldest events, so the age is theirs), max(position) is one unique-index probe, and the
    transaction gets its own lock and statement timeouts."""
    timeout = str(timeout_ms)
    await db.execute(
        sa.text(
            "SELECT set_config('lock_timeout', :timeout, true), "
            "set_config('statement_timeout', :timeout, true)"
        ),
        {"timeout": timeout},
    )
    row = (
        await db.execute(
            sa.text(
                """
                SELECT
                    head.backlog,
                    extract(epoch FROM clock_timestamp() - head.oldest) AS oldest_age_seconds,
                    (SELECT max(position) FROM outbox_events) AS last_position
                FROM (
                    SELECT count(*) AS backlog, min(created_at) AS oldest
                    FROM (
                        SELECT created_at FROM outbox_events
                        WHERE position IS NULL
                        ORDER BY id
                        LIMIT :count_max
                    ) AS unpublished
                ) AS head
                """
            ),
            {"count_max": backlog_count_max},
        )
    ).one()
    age = row.oldest_age_seconds
    backlog = int(row.backlog or 0)
    return OutboxStatus(
        backlog=backlog,
        backlog_capped=backlog >= backlog_count_max,
        oldest_age_seconds=max(0.0, float(age)) if age is not None else 0.0,
        last_position=int(row.last_position or 0),
    )


async def trim_published(db: Executor, published_before: dt.datetime, limit: int) -> int:
    """Delete published rows older than the cutoff among the `limit` lowest positions (positions
    are handed out in time order, so those are the oldest, and the scan stays bounded). The newest
    published row always stays: it carries max(position), so positions never restart."""
    result = await db.execute(
        sa.text(
            """
            DELETE FROM outbox_events
            WHERE id IN (
                SELECT id FROM (
                    SELECT id, position, published_at FROM outbox_events
                    WHERE position IS NOT NULL
                    ORDER BY position
                    LIMIT :limit
                ) AS oldest
                WHERE published_at < :cutoff
                  AND position < (SELECT max(position) FROM outbox_events)
            )
            """
        ),
        {"cutoff": published_before, "limit": limit},
    )
    return int(getattr(result, "rowcount", 0) or 0)
