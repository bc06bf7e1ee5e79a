"""What a size cost the database: bytes on disk and in WAL, and how long the worker took.

- disk: `pg_database_size` and `pg_total_relation_size` of every table (indexes and TOAST
  included) before and after a fill step, both read once the worker has drained;
- WAL: `pg_current_wal_lsn()` before the step's first batch and after the worker has
  drained (every event published, every audit record sealed and covered by a signed
  checkpoint), so the relay's and the sealer's writes count with the transfers';
- lags: the existing bench's event lag (outbox row made to published) and seal lag (audit record
  to sealed) over the step's window, and the checkpoint lag: audit record to the first signed
  checkpoint whose tree covers its seal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger.bench.lag import db_clock, measure_lags

Conn = psycopg.AsyncConnection[tuple[object, ...]]

DRAIN_DEADLINE_SECONDS = 1_800.0
DRAIN_STALL_SECONDS = 60.0  # nothing moved this long: no worker runs (reported as a backlog)
DRAIN_POLL_SECONDS = 1.0

_WAITING = """
SELECT (SELECT count(*) FROM outbox_events e WHERE e.created_at >= %(start)s
           AND NOT EXISTS (SELECT 1 FROM outbox_feed f WHERE f.id = e.id)),
       (SELECT count(*) FROM audit_records r WHERE r.at >= %(start)s
           AND NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.record_id = r.id)),
       coalesce((SELECT max(seq) FROM audit_seals), 0)
         - coalesce((SELECT max(tree_size) FROM audit_checkpoints), 0)
"""
_CHECKPOINT_LAG = """
SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), count(lag) FROM (
  SELECT extract(epoch FROM (SELECT c.created_at FROM audit_checkpoints c
                             WHERE c.tree_size >= s.seq ORDER BY c.tree_size LIMIT 1) - r.at) AS lag
    FROM audit_records r JOIN audit_seals s ON s.record_id = r.id
   WHERE r.at >= %(start)s AND r.at <= %(end)s) AS l
"""
_TABLES = """
SELECT c.relname, pg_total_relation_size(c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname = current_schema()
"""


@dataclass(frozen=True, slots=True)
class Footprint:
    """The database at one instant: its size, each table's, and the WAL position."""

    database_bytes: int
    tables: dict[str, int]
    wal_lsn: str


async def wal_lsn(conn: Conn) -> str:
    cursor = await conn.execute("SELECT pg_current_wal_lsn()::text")
    row = await cursor.fetchone()
    return str(row[0]) if row is not None else "0/0"


async def wal_bytes(conn: Conn, start: str, end: str) -> int:
    cursor = await conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (end, start))
    row = await cursor.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0  # type: ignore[call-overload]


async def footprint(conn: Conn) -> Footprint:
    cursor = await conn.execute("SELECT pg_database_size(current_database())")
    row = await cursor.fetchone()
    size = int(row[0]) if row is not None and isinstance(row[0], int) else 0
    cursor = await conn.execute(_TABLES)
    tables = {str(name): int(bytes_) for name, bytes_ in await cursor.fetchall()}  # type: ignore[call-overload]
    return Footprint(database_bytes=size, tables=tables, wal_lsn=await wal_lsn(conn))


async def per_transfer(
    conn: Conn, before: Footprint, after: Footprint, added: int
) -> dict[str, Any]:
    """Disk and WAL bytes per added transfer, and each table's that grew (largest first)."""
    if added <= 0:
        return {"disk_bytes_per_transfer": None, "wal_bytes_per_transfer": None}
    grown = {
        name: after.tables[name] - before.tables.get(name, 0)
        for name in after.tables
        if after.tables[name] != before.tables.get(name, 0)
    }
    wal = await wal_bytes(conn, before.wal_lsn, after.wal_lsn)
    return {
        "disk_bytes_per_transfer": round((after.database_bytes - before.database_bytes) / added),
        "wal_bytes_per_transfer": round(wal / added),
        "table_bytes_per_transfer": {
            name: round(grew / added)
            for name, grew in sorted(grown.items(), key=lambda item: -item[1])
        },
    }


async def drain(conn: Conn, since: dt.datetime) -> tuple[float, int]:
    """Wait until the worker has published every event, sealed every record written since
    `since` and signed a checkpoint over every seal. Returns the seconds waited and what was
    still waiting when it gave up (0 when drained)."""
    started = time.monotonic()
    last: tuple[int, ...] | None = None
    moved_at = started
    while True:
        cursor = await conn.execute(_WAITING, {"start": since})
        row = await cursor.fetchone()
        waiting = tuple(max(int(value), 0) for value in row) if row is not None else (0,)  # type: ignore[call-overload]
        now = time.monotonic()
        if not any(waiting):
            return now - started, 0
        if waiting != last:
            last, moved_at = waiting, now
        elif now - moved_at >= DRAIN_STALL_SECONDS or now - started >= DRAIN_DEADLINE_SECONDS:
            return now - started, sum(waiting)
        await asyncio.sleep(DRAIN_POLL_SECONDS)


async def checkpoint_lag_p99_ms(conn: Conn, start: dt.datetime, end: dt.datetime) -> float | None:
    cursor = await conn.execute(_CHECKPOINT_LAG, {"start": start, "end": end})
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        return None
    return round(float(row[0]) * 1000, 1)  # type: ignore[arg-type]


async def lags(
    database_url: str, conn: Conn, start: dt.datetime, end: dt.datetime
) -> dict[str, float | int | None]:
    """The step's event, seal and checkpoint lags (p99, ms), read after the drain."""
    report = await measure_lags(database_url, start, end)
    report["checkpoint_lag_p99_ms"] = await checkpoint_lag_p99_ms(conn, start, end)
    return report


__all__ = [
    "Conn",
    "Footprint",
    "checkpoint_lag_p99_ms",
    "db_clock",
    "drain",
    "footprint",
    "lags",
    "per_transfer",
    "wal_bytes",
    "wal_lsn",
]
