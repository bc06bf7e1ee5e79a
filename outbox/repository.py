"""All SQL of the producing side of events: the relay, the HTTP feed, retention and status.

Events are written once and never updated. Feed positions are handed out by exactly one relay at
a time (it holds RELAY_LOCK): each step inserts one `outbox_batches` row whose `event_ids` get
the positions `first_position`, `first_position + 1`, ... in that order, `first_position` being
one past the previous batch's last. So positions are gapless and commit in increasing order,
which lets the feed page by position without ever skipping an event whose transaction committed
late behind a higher insert id.

Which events are new: each event carries its transaction id (`xact_id`). A relay step takes a
*window*: the events of the transactions that committed after one snapshot (`window_low`) and
by another (`window_high`, taken when the window opens), in id order. Every committed event is
in exactly one window (the first snapshot that sees its transaction commit), so nothing is
skipped or taken twice whatever the commit order; a window larger than a step is taken over
several steps, `window_after_id` saying how far. The batch row records the window, so a relay
that takes over (or restarts) continues exactly where the last batch ended. Within a window id
order keeps each subject's order: the writer takes its id after the subject's lock, so of two
events of a subject the later one has the higher id, and its transaction cannot commit first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

import msgspec
import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ledger.core.locks import SINGLETON_KEY, LockClass
from ledger.core.packed import PackedValueError, unpack
from outbox.models import OutboxEvent

# The single active relay's session lock (ledger/core/locks.py).
RELAY_LOCK = (int(LockClass.OUTBOX_RELAY), SINGLETON_KEY)

Executor = AsyncConnection | AsyncSession

events_t = cast(sa.Table, OutboxEvent.__table__)


class _TraceOnly(msgspec.Struct):
    traceparent: str | None = None


_read_trace = msgspec.json.Decoder(_TraceOnly).decode


def stored_envelope(text: str | None, packed: bytes | None) -> bytes:
    """An event's envelope as the writer encoded it, from its row's two columns: the text of
    `envelope` (read as text, never through a JSON parser, which would reprint numbers in the
    metadata it carries) or `envelope_packed` unpacked (outbox/models.py)."""
    if packed is not None:
        return unpack(packed)
    if text is None:
        raise PackedValueError("an outbox row with neither envelope column")
    return text.encode()


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


# The cursor of a window with nothing left after it.
WINDOW_DONE = 9_223_372_036_854_775_807
# Before the first batch: a snapshot in which no transaction has committed, finished.
NO_SNAPSHOT = "1:1:"


@dataclass(frozen=True, slots=True)
class Window:
    """The events of the transactions visible in `high` and not in `low` (pg_snapshot text),
    those with an id above `after_id` still to publish."""

    low: str
    high: str
    after_id: int

    @property
    def done(self) -> bool:
        return self.after_id == WINDOW_DONE

    def bounds(self) -> dict[str, Any]:
        """The query parameters: the snapshots, and the transaction ids that can hold the
        window's events: those in progress in `low` (its xip list) and those from its xmax on,
        below `high`'s xmax. Not `low`'s xmin: a transaction open for an hour (a backup, a
        forgotten session) would make every window read an hour of events."""
        _xmin, low_xmax, low_xip = self.low.split(":")
        return {
            "low": self.low,
            "high": self.high,
            "low_xip": [int(x) for x in low_xip.split(",") if x],
            "low_xmax": int(low_xmax),
            "high_xmax": int(self.high.split(":")[1]),
            "after_id": self.after_id,
        }


FIRST_WINDOW = Window(low=NO_SNAPSHOT, high=NO_SNAPSHOT, after_id=WINDOW_DONE)

_XID = "CAST(CAST(e.xact_id AS text) AS xid8)"
_VISIBLE = f"""
    NOT pg_visible_in_snapshot({_XID}, CAST(:low AS pg_snapshot))
    AND pg_visible_in_snapshot({_XID}, CAST(:high AS pg_snapshot))
"""
IN_WINDOW = f"""
    (e.xact_id = ANY(CAST(:low_xip AS bigint[]))
     OR (e.xact_id >= :low_xmax AND e.xact_id < :high_xmax))
    AND {_VISIBLE}
"""

# A step's events: the primary key from the window's cursor, in id order, until `limit` of them
# are in the window (no bounds on xact_id: the plan must not read the whole rest of the window
# through that index and sort it at every step). The cursor starts at the window's first id, so
# what is read beside the window is what committed after it.
FETCH_WINDOW = f"""
SELECT e.id, e.subject, CAST(e.envelope AS text) AS envelope, e.envelope_packed, e.created_at
FROM outbox_events AS e
WHERE e.id > :after_id AND {_VISIBLE}
ORDER BY e.id
LIMIT :limit
"""

# Where a new window's events start: one pass over the window's xid range through the xact_id
# index (`id + 0` keeps the planner off the primary key, whose scan from the first id would read
# every published event first).
WINDOW_START = f"""
SELECT min(e.id + 0) FROM outbox_events AS e WHERE {IN_WINDOW}
"""


async def relay_place(db: Executor) -> tuple[Window, int]:
    """The window the last batch left the relay in, and the last position handed out (0 before
    the first batch)."""
    row = (
        await db.execute(
            sa.text(
                "SELECT window_low, window_high, window_after_id, "
                "       first_position + cardinality(event_ids) - 1 AS last_position "
                "FROM outbox_batches ORDER BY first_position DESC LIMIT 1"
            )
        )
    ).one_or_none()
    if row is None:
        return FIRST_WINDOW, 0
    return Window(row.window_low, row.window_high, int(row.window_after_id)), int(row.last_position)


async def _window_rows(db: Executor, window: Window, limit: int) -> list[UnpublishedEvent]:
    result = await db.execute(sa.text(FETCH_WINDOW), {**window.bounds(), "limit": limit})
    events = []
    for r in result:
        body = stored_envelope(r.envelope, r.envelope_packed)
        events.append(
            UnpublishedEvent(r.id, r.subject, body, _read_trace(body).traceparent, r.created_at)
        )
    return events


async def fetch_unpublished(db: Executor, limit: int) -> tuple[Window, list[UnpublishedEvent]]:
    """The next events to publish, at most `limit`, and the window they come from (which the
    batch row records). Continues the last batch's window; when that has nothing left, opens
    the next one at the current snapshot. A transaction still open now is in a later window,
    whatever its events' ids.

    Plans are made for each call's values (`force_custom_plan`): a generic plan cannot tell a
    window of three events from one of a million."""
    await db.execute(sa.text("SET LOCAL plan_cache_mode = force_custom_plan"))
    window, _last = await relay_place(db)
    if not window.done:
        rows = await _window_rows(db, window, limit)
        if rows:
            return window, rows
    high = (await db.execute(sa.text("SELECT CAST(pg_current_snapshot() AS text)"))).scalar_one()
    opened = Window(low=window.high, high=str(high), after_id=0)
    start = (await db.execute(sa.text(WINDOW_START), opened.bounds())).scalar()
    if start is None:
        return opened, []
    opened = Window(opened.low, opened.high, int(start) - 1)
    return opened, await _window_rows(db, opened, limit)


MARK_PUBLISHED = """
INSERT INTO outbox_batches (first_position, event_ids, published_at, window_low, window_high,
                            window_after_id)
SELECT coalesce(
           (SELECT first_position + cardinality(event_ids) FROM outbox_batches
            ORDER BY first_position DESC LIMIT 1),
           1),
       CAST(:ids AS bigint[]), :now, :low, :high, :after_id
"""


async def mark_published(
    db: Executor, window: Window, ids: list[int], now: dt.datetime, *, last_of_window: bool
) -> int:
    """Give `ids` (a window's events in id order, as fetch_unpublished returned them) the next
    feed positions: one row, whatever their number. `last_of_window`: nothing of the window
    is left after them, so the next step opens a new one. Only the lock holder calls this; the
    primary key on first_position would refuse a second writer anyway."""
    if not ids:
        return 0
    after_id = WINDOW_DONE if last_of_window else ids[-1]
    await db.execute(
        sa.text(MARK_PUBLISHED),
        {"ids": ids, "now": now, "low": window.low, "high": window.high, "after_id": after_id},
    )
    return len(ids)


FEED_PAGE = """
WITH start AS (
    SELECT greatest(
        :after,
        coalesce((SELECT min(first_position) FROM outbox_batches), 1) - 1
    ) AS after
), first_batch AS (
    SELECT coalesce(
        (SELECT b.first_position FROM outbox_batches AS b, start
         WHERE b.first_position <= start.after + 1
         ORDER BY b.first_position DESC LIMIT 1),
        0
    ) AS first_position
)
SELECT f.position, CAST(e.envelope AS text) AS envelope, e.envelope_packed
FROM (
    SELECT b.first_position + o.ord - 1 AS position, o.id
    FROM start, first_batch, outbox_batches AS b
    CROSS JOIN LATERAL unnest(b.event_ids) WITH ORDINALITY AS o(id, ord)
    WHERE b.first_position >= first_batch.first_position
      AND b.first_position <= start.after + :limit
      AND b.first_position + o.ord - 1 > start.after
      AND b.first_position + o.ord - 1 <= start.after + :limit
    -- At most `limit` positions match anyway; said here, it is what the planner counts on. Its
    -- guess for the unnested ids (hundreds per batch) once made a merge join over the whole
    -- primary key look cheaper than a probe per id, once rows were narrow (packed envelopes).
    LIMIT :limit
) AS f
JOIN outbox_events AS e ON e.id = f.id
ORDER BY f.position
"""


async def feed_page(db: Executor, after: int, limit: int) -> list[tuple[int, bytes]]:
    """(position, envelope as stored) of the events after `after`, in position order: the
    batches that hold positions after+1..after+limit (a primary-key range), their ids, and
    those events by primary key. A cursor before the oldest retained batch starts there."""
    result = await db.execute(sa.text(FEED_PAGE), {"after": after, "limit": limit})
    return [(int(r.position), stored_envelope(r.envelope, r.envelope_packed)) for r in result]


async def last_feed_position(db: Executor) -> int:
    """The feed's head: the position of the newest event in the feed (0 before the first). A
    reader that starts here sees exactly the events fed after this call (webhook endpoints do)."""
    _window, last = await relay_place(db)
    return last


async def first_retained_position(db: Executor) -> int | None:
    value = (await db.execute(sa.text("SELECT min(first_position) FROM outbox_batches"))).scalar()
    return None if value is None else int(value)


async def status(db: Executor, *, backlog_count_max: int, timeout_ms: int) -> OutboxStatus:
    """The backlog counted up to `backlog_count_max` rows (`backlog_capped` when it reached it:
    a floor), the age of the oldest of them, and the last feed position.

    Callable by an unauthenticated scrape, so its cost is bounded whatever the backlog: the
    unpublished events are those of the relay's current window after its cursor and those of
    transactions its window has not reached, read through the xact_id index from the window's
    start up to the cap (the oldest transactions first, so the age is theirs); the last batch is
    one primary-key probe; and the transaction gets its own lock and statement timeouts."""
    timeout = str(timeout_ms)
    await db.execute(
        sa.text(
            "SELECT set_config('lock_timeout', :timeout, true), "
            "set_config('statement_timeout', :timeout, true)"
        ),
        {"timeout": timeout},
    )
    window, last = await relay_place(db)
    row = (
        await db.execute(
            sa.text(
                f"""
                SELECT
                    count(*) AS backlog,
                    extract(epoch FROM clock_timestamp() - min(created_at)) AS oldest_age_seconds
                FROM (
                    SELECT e.created_at FROM outbox_events AS e
                    WHERE (e.xact_id = ANY(CAST(:low_xip AS bigint[])) OR e.xact_id >= :low_xmax)
                      AND NOT pg_visible_in_snapshot({_XID}, CAST(:low AS pg_snapshot))
                      AND (e.id > :after_id
                           OR NOT pg_visible_in_snapshot({_XID}, CAST(:high AS pg_snapshot)))
                    ORDER BY e.xact_id
                    LIMIT :count_max
                ) AS unpublished
                """
            ),
            {**window.bounds(), "count_max": backlog_count_max},
        )
    ).one()
    age = row.oldest_age_seconds
    backlog = int(row.backlog or 0)
    return OutboxStatus(
        backlog=backlog,
        backlog_capped=backlog >= backlog_count_max,
        oldest_age_seconds=max(0.0, float(age)) if age is not None else 0.0,
        last_position=last,
    )


TRIM = """
WITH head AS (
    SELECT first_position, event_ids, published_at,
           sum(cardinality(event_ids)) OVER (ORDER BY first_position)
               - cardinality(event_ids) AS before
    FROM (
        SELECT first_position, event_ids, published_at FROM outbox_batches
        ORDER BY first_position LIMIT :limit
    ) AS oldest
), doomed AS (
    SELECT first_position, event_ids FROM head
    WHERE before < :limit
      AND published_at < :cutoff
      AND first_position < (SELECT max(first_position) FROM outbox_batches)
), gone_batches AS (
    DELETE FROM outbox_batches WHERE first_position IN (SELECT first_position FROM doomed)
)
DELETE FROM outbox_events WHERE id IN (SELECT unnest(event_ids) FROM doomed)
"""


async def trim_published(db: Executor, published_before: dt.datetime, limit: int) -> int:
    """Delete the oldest batches published before the cutoff, with their events, about `limit`
    events at most (whole batches: the first one whatever its size). Batches are in time
    order, so those are the oldest, and the scan stays bounded. The newest batch always stays:
    it carries the last position, so positions never restart, and the relay's window."""
    result = await db.execute(sa.text(TRIM), {"cutoff": published_before, "limit": limit})
    return int(getattr(result, "rowcount", 0) or 0)
