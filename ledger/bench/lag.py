"""How far behind the worker ran during the load: event lag and seal lag, read from the database.

Both are read from what the service itself records, for the rows written during the load
window (bounded by PostgreSQL's clock before the first request and after the last answer):
- event lag: the `published_at` of the relay's batch (the `outbox_feed` view) minus the event's
  `created_at`. `created_at` is taken by the API when it builds the event, a few ms before the
  transaction commits; `published_at` is taken by the
  relay after Kafka acknowledged (`acks=all`) every record of its batch. So the figure is an
  upper bound on "commit to on the topic" (without Kafka configured, it is commit to feed);
- seal lag: `audit_seals.sealed_at - audit_records.at` for the same window's records.

After the load the bench waits for the worker to catch up with the window (at most
`LAG_DRAIN_SECONDS`, and stops early when nothing moved for `LAG_STALL_SECONDS`, as when no
worker runs), then takes the 99th percentile. Rows still waiting then are counted in
`event_backlog` / `seal_backlog` and enter the percentile with their lag so far, a lower bound:
a run with a backlog has not met any lag target, whatever the percentile says.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass

import psycopg

LAG_DRAIN_SECONDS = 60.0
LAG_STALL_SECONDS = 5.0
LAG_POLL_SECONDS = 0.2

_WAITING = {
    "event": (
        "SELECT count(*) FROM outbox_events e "
        "WHERE e.created_at >= %(start)s AND e.created_at <= %(end)s "
        "AND NOT EXISTS (SELECT 1 FROM outbox_feed f WHERE f.id = e.id)"
    ),
    "seal": (
        "SELECT count(*) FROM audit_records r "
        "WHERE r.at >= %(start)s AND r.at <= %(end)s "
        "AND NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.record_id = r.id)"
    ),
}
_P99 = {
    "event": (
        "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), count(*) FROM ("
        "SELECT extract(epoch FROM coalesce(f.published_at, clock_timestamp()) - e.created_at) "
        "AS lag FROM outbox_events e LEFT JOIN outbox_feed f ON f.id = e.id "
        "WHERE e.created_at >= %(start)s AND e.created_at <= %(end)s) AS l"
    ),
    "seal": (
        "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), count(*) FROM ("
        "SELECT extract(epoch FROM coalesce(s.sealed_at, clock_timestamp()) - r.at) AS lag "
        "FROM audit_records r LEFT JOIN audit_seals s ON s.record_id = r.id "
        "WHERE r.at >= %(start)s AND r.at <= %(end)s) AS l"
    ),
}


@dataclass(frozen=True, slots=True)
class Lag:
    p99_ms: float | None
    rows: int
    backlog: int


async def db_clock(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> dt.datetime:
    cursor = await conn.execute("SELECT clock_timestamp()")
    row = await cursor.fetchone()
    if row is None or not isinstance(row[0], dt.datetime):  # pragma: no cover - PostgreSQL
        raise RuntimeError("clock_timestamp() returned no timestamp")
    return row[0]


async def _count(
    conn: psycopg.AsyncConnection[tuple[object, ...]], kind: str, window: dict[str, dt.datetime]
) -> int:
    cursor = await conn.execute(_WAITING[kind], window)
    row = await cursor.fetchone()
    return int(row[0]) if row is not None and isinstance(row[0], int) else 0


async def _wait_for_worker(
    conn: psycopg.AsyncConnection[tuple[object, ...]], window: dict[str, dt.datetime]
) -> None:
    deadline = time.monotonic() + LAG_DRAIN_SECONDS
    last: tuple[int, int] | None = None
    moved_at = time.monotonic()
    while time.monotonic() < deadline:
        waiting = (await _count(conn, "event", window), await _count(conn, "seal", window))
        if waiting == (0, 0):
            return
        if waiting != last:
            last, moved_at = waiting, time.monotonic()
        elif time.monotonic() - moved_at >= LAG_STALL_SECONDS:
            return
        await asyncio.sleep(LAG_POLL_SECONDS)


async def measure_lags(
    database_url: str, start: dt.datetime, end: dt.datetime
) -> dict[str, float | int | None]:
    """The report's `event_lag_p99_ms`, `seal_lag_p99_ms` and their backlogs."""
    window = {"start": start, "end": end}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await _wait_for_worker(conn, window)
        lags = {kind: await _lag(conn, kind, window) for kind in ("event", "seal")}
    report: dict[str, float | int | None] = {}
    for kind, lag in lags.items():
        report[f"{kind}_lag_p99_ms"] = lag.p99_ms
        report[f"{kind}_lag_rows"] = lag.rows
        report[f"{kind}_backlog"] = lag.backlog
    return report


async def _lag(
    conn: psycopg.AsyncConnection[tuple[object, ...]], kind: str, window: dict[str, dt.datetime]
) -> Lag:
    backlog = await _count(conn, kind, window)
    cursor = await conn.execute(_P99[kind], window)
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        return Lag(p99_ms=None, rows=0, backlog=backlog)
    seconds = float(row[0])  # type: ignore[arg-type]
    rows = int(row[1]) if isinstance(row[1], int) else 0
    return Lag(p99_ms=round(seconds * 1000, 1), rows=rows, backlog=backlog)
