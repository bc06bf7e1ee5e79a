"""The relay's mark under a backlog its statistics never saw: the rows are reached by primary key
(not by scanning every unpublished row), and the positions stay gapless in id order."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg
from psycopg import sql

from ledger.core.db import create_engine
from ledger.core.settings import Settings
from outbox.repository import MARK_PUBLISHED, mark_published


def _rows(published: bool) -> str:
    """20,000 outbox rows, published (positions 1..20,000) or not."""
    position, published_at = ("g", "now()") if published else ("NULL", "NULL")
    return (
        "INSERT INTO outbox_events (event_id, type, subject, envelope, created_at, position, "
        f"published_at) SELECT gen_random_uuid(), 'ledger.test', 'subject-' || g, "
        f"CAST('{{}}' AS json), now(), {position}, {published_at} "
        "FROM generate_series(1, 20000) AS g"
    )


def _index_scans(plan: Any) -> list[tuple[str, str]]:
    """(index, its condition) of every index scan in the plan."""
    found = [(plan["Index Name"], plan.get("Index Cond", ""))] if "Index Name" in plan else []
    for child in plan.get("Plans", []):
        found += _index_scans(child)
    return found


async def test_the_mark_reaches_a_backlog_by_id_whatever_the_statistics(
    settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    # Statistics taken while every row was published, then a backlog they never saw.
    sync_db.execute(_rows(published=True))
    sync_db.execute("ANALYZE outbox_events")
    sync_db.execute(_rows(published=False))
    ids = [
        row[0]
        for row in sync_db.execute(
            "SELECT id FROM outbox_events WHERE position IS NULL ORDER BY id LIMIT 500"
        )
    ]

    # The plan PostgreSQL caches once the statement is prepared: the generic one.
    prepared = MARK_PUBLISHED.replace("CAST(:ids AS bigint[])", "$1").replace(":now", "$2")
    with sync_db.transaction(force_rollback=True):
        sync_db.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        sync_db.execute(f"PREPARE mark_plan(bigint[], timestamptz) AS {prepared}")
        # EXECUTE takes no bound parameters: the ids go in as a literal.
        explain = sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE mark_plan({}, now())").format(
            sql.Literal(ids)
        )
        explained = sync_db.execute(explain).fetchone()
        sync_db.execute("DEALLOCATE mark_plan")
    assert explained is not None
    plan = explained[0] if isinstance(explained[0], list) else json.loads(explained[0])
    scans = _index_scans(plan[0]["Plan"])
    assert "pk_outbox_events" in {index for index, _ in scans}, scans
    # No scan of the unpublished rows (the position index's NULLs, or the partial index): the
    # position index serves only max(position).
    assert not [s for s in scans if "IS NULL" in s[1] or s[0] == "ix_outbox_events_unpublished"]

    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            marked = await mark_published(conn, ids, dt.datetime.now(dt.UTC))
    finally:
        await engine.dispose()
    assert marked == 500
    positions = sync_db.execute(
        "SELECT position FROM outbox_events WHERE id = ANY(%s) ORDER BY id", (ids,)
    ).fetchall()
    assert [p for (p,) in positions] == list(range(20_001, 20_501))
