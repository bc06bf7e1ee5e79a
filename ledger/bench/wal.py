"""WAL the load writes, worker included: `wal_bytes_per_transfer` in the bench's JSON.

Before the first request the bench waits until the worker has nothing left of the setup (every
event published, every audit record sealed and covered by a signed checkpoint), then reads
`pg_current_wal_lsn()`; after the load (and the check, which only reads) it waits for the same
state again and reads the LSN once more. The difference, over the acknowledged transfers, is what
one transfer costs the database's WAL (what a standby receives), the worker's publishing, sealing
and checkpointing included. The WAL of anything else the server runs meanwhile is counted too:
measure on a server of your own.
"""

from __future__ import annotations

import asyncio
import time

import psycopg

DRAIN_SECONDS = 120.0
STALL_SECONDS = 15.0  # a checkpoint is signed at least every 10 s while records were sealed
POLL_SECONDS = 0.25

# Work the worker still has: unpublished events, unsealed records, sealed records no signed
# checkpoint covers yet. Counting whole tables is fine at a bench's sizes.
_PENDING = """
SELECT
    (SELECT count(*) FROM outbox_events e
      WHERE NOT EXISTS (SELECT 1 FROM outbox_feed f WHERE f.id = e.id)),
    (SELECT count(*) FROM audit_records) - (SELECT count(*) FROM audit_seals),
    (SELECT count(*) FROM audit_seals)
      - coalesce((SELECT max(tree_size) FROM audit_checkpoints), 0)
"""


async def drained_lsn(database_url: str) -> tuple[int, bool]:
    """(the WAL position in bytes, whether the worker had drained) once it has nothing left to
    do, or after DRAIN_SECONDS / when nothing moved for STALL_SECONDS."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + DRAIN_SECONDS
        last: tuple[int, ...] | None = None
        moved_at = time.monotonic()
        drained = False
        while time.monotonic() < deadline:
            row = await (await conn.execute(_PENDING)).fetchone()
            pending = tuple(int(v or 0) for v in (row or (0, 0, 0)))
            if not any(pending):
                drained = True
                break
            if pending != last:
                last, moved_at = pending, time.monotonic()
            elif time.monotonic() - moved_at >= STALL_SECONDS:
                break
            await asyncio.sleep(POLL_SECONDS)
        lsn = await (await conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")).fetchone()
        return (int(lsn[0]) if lsn is not None else 0), drained


def lsn_text(position: int) -> str:
    """A WAL position in bytes as PostgreSQL writes an LSN (`0/1A2B3C4`)."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
