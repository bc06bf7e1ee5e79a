"""The relay's batch rows: one row per step marks what it published, the events are never written
again, and the window the row records is where the next step (or the next relay) goes on.

- a backlog its statistics never saw is reached without reading the published events, and gets
  gapless positions in id order, over several steps of one window;
- a relay that dies between publishing and recording its batch leaves the same window behind:
  the next relay publishes those events again and records them once (at least once, never lost,
  never two positions);
- an event whose transaction commits late, behind events with higher ids that a window already
  took, is in a later window: every event once, in one position each;
- rows left by the schema before batches: what was published keeps its position, what was not
  is taken by the first window after the upgrade;
- a transaction left open (a backup, a forgotten session) holds every snapshot's xmin back, yet
  a new window does not read what was published since it began;
- a feed page near the head, under a prepared statement's generic plan, reads only its own
  events from the table.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import psycopg
from psycopg import sql

from ledger.core import migrate
from ledger.core.db import create_engine
from ledger.core.packed import pack
from ledger.core.settings import Settings
from outbox.relay import Relay
from outbox.repository import (
    FEED_PAGE,
    FETCH_WINDOW,
    WINDOW_DONE,
    WINDOW_START,
    fetch_unpublished,
    mark_published,
)

NOW = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
INSERT_EVENTS = (
    "INSERT INTO outbox_events (event_id, type, subject, envelope, created_at) "
    "SELECT gen_random_uuid(), 'ledger.test', 'subject-' || g, CAST('{}' AS json), now() "
    "FROM generate_series(1, %s) AS g"
)
FEED = "SELECT position, id FROM outbox_feed ORDER BY position"


def _scans(plan: Any) -> list[tuple[str, str, int]]:
    """(node type, relation or index, rows it read) of every scan in the plan."""
    found = []
    if "Relation Name" in plan or "Index Name" in plan:
        read = int(plan.get("Actual Rows", 0)) + int(plan.get("Rows Removed by Filter", 0))
        name = plan.get("Index Name", plan.get("Relation Name", ""))
        found.append((plan["Node Type"], name, read))
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


async def _step(settings: Settings, limit: int, *, mark: bool = True) -> list[int]:
    """One relay step by hand: the events it takes (and records, with `mark`)."""
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            window, rows = await fetch_unpublished(conn, limit)
        ids = [row.id for row in rows]
        if mark and ids:
            async with engine.begin() as conn:
                await mark_published(conn, window, ids, NOW, last_of_window=len(ids) < limit)
    finally:
        await engine.dispose()
    return ids


def _assert_feed_is_every_event_once(db: psycopg.Connection[Any]) -> list[tuple[int, int]]:
    feed = db.execute(FEED).fetchall()
    events = {row[0] for row in db.execute("SELECT id FROM outbox_events").fetchall()}
    assert [p for p, _ in feed] == list(range(1, len(feed) + 1))
    assert sorted(i for _, i in feed) == sorted(events)
    return [(int(p), int(i)) for p, i in feed]


async def test_a_backlog_is_taken_by_id_over_steps_without_reading_what_was_published(
    settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    # 20,000 published events, statistics taken then, and a backlog of 2,000 they never saw.
    sync_db.execute(INSERT_EVENTS, (20_000,))
    assert len(await _step(settings, 20_000)) == 20_000
    sync_db.execute("ANALYZE outbox_events")
    sync_db.execute(INSERT_EVENTS, (2_000,))

    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            window, rows = await fetch_unpublished(conn, 500)
    finally:
        await engine.dispose()
    assert len(rows) == 500
    explain = FETCH_WINDOW
    bounds = {**window.bounds(), "limit": 500}
    for name, value in sorted(bounds.items(), key=lambda item: -len(item[0])):
        explain = explain.replace(f":{name}", sql.quote(value))
    explained = sync_db.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {explain}").fetchone()
    assert explained is not None
    plan = explained[0] if isinstance(explained[0], list) else json.loads(explained[0])
    scans = _scans(plan[0]["Plan"])
    assert "Seq Scan" not in {kind for kind, _, _ in scans}, scans
    # What it read is about what it returned, not the 20,000 published before.
    assert sum(read for _, _, read in scans) < 2_000, scans

    taken = [await _step(settings, 500) for _ in range(5)]
    assert [len(step) for step in taken] == [500, 500, 500, 500, 0]
    feed = _assert_feed_is_every_event_once(sync_db)
    backlog = [i for p, i in feed if p > 20_000]
    assert backlog == sorted(backlog)  # positions follow ids within the window
    assert sync_db.execute("SELECT count(*) FROM outbox_batches").fetchone() == (5,)


async def test_a_relay_that_dies_before_recording_its_batch_leaves_the_events_to_the_next(
    settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    sync_db.execute(INSERT_EVENTS, (7,))
    assert len(await _step(settings, 3)) == 3  # a window of 7, three taken and recorded
    # The next step publishes three more and dies before its batch row.
    lost = await _step(settings, 3, mark=False)
    assert len(lost) == 3
    # Another relay takes over where the last batch row says: the same three, then the rest.
    relay = Relay(settings, batch_size=3)
    try:
        counts = [await relay.step() for _ in range(4)]
    finally:
        await relay.close()
    assert counts == [3, 1, 0, 0]
    feed = _assert_feed_is_every_event_once(sync_db)
    assert [i for p, i in feed if 4 <= p <= 6] == lost


async def test_a_late_commit_behind_a_window_is_taken_by_a_later_one(
    settings: Settings, sync_db: psycopg.Connection[Any], db_url: str
) -> None:
    with psycopg.connect(db_url) as held:
        held.execute(INSERT_EVENTS, (1,))  # the lowest id, its transaction still open
        (late,) = held.execute("SELECT max(id) FROM outbox_events").fetchone() or (0,)
        sync_db.execute(INSERT_EVENTS, (4,))
        first = await _step(settings, 2)
        second = await _step(settings, 2)
        assert late not in first + second and len(first + second) == 4
        held.commit()
    assert await _step(settings, 2) == [late]
    assert await _step(settings, 2) == []
    feed = _assert_feed_is_every_event_once(sync_db)
    assert feed[-1] == (5, late)


async def test_rows_of_the_schema_before_batches_keep_their_positions_or_get_the_next(
    settings: Settings, sync_db: psycopg.Connection[Any], db_url: str
) -> None:
    migrate.downgrade(db_url, "0020_webhooks")
    sync_db.execute(INSERT_EVENTS, (5,))
    sync_db.execute(
        "UPDATE outbox_events SET position = id - (SELECT min(id) FROM outbox_events) + 1, "
        "published_at = now() WHERE id < (SELECT min(id) + 3 FROM outbox_events)"
    )
    published = sync_db.execute(
        "SELECT position, id FROM outbox_events WHERE position IS NOT NULL ORDER BY position"
    ).fetchall()
    migrate.upgrade(db_url)
    assert sync_db.execute(FEED).fetchall() == published
    sync_db.execute(INSERT_EVENTS, (2,))
    taken = await _step(settings, 500)
    assert len(taken) == 4  # the two the old relay had not published, and the two new ones
    assert await _step(settings, 500) == []
    feed = _assert_feed_is_every_event_once(sync_db)
    assert feed[:3] == [(p, i) for p, i in published]
    # And back: the downgrade writes each event's position into its row again.
    migrate.downgrade(db_url, "0020_webhooks")
    rows = sync_db.execute(
        "SELECT position, id FROM outbox_events WHERE position IS NOT NULL ORDER BY position"
    ).fetchall()
    assert [(int(p), int(i)) for p, i in rows] == feed
    migrate.upgrade(db_url)


async def test_a_transaction_left_open_does_not_make_each_window_read_what_was_published(
    settings: Settings, sync_db: psycopg.Connection[Any], db_url: str
) -> None:
    with psycopg.connect(db_url) as forgotten:
        # An open transaction with an id (a backup, a session left in a transaction): the
        # xmin of every snapshot stays behind it while it lasts.
        forgotten.execute("SELECT pg_current_xact_id()")
        sync_db.execute(INSERT_EVENTS, (5_000,))
        assert len(await _step(settings, 5_000)) == 5_000
        sync_db.execute(INSERT_EVENTS, (3,))
        engine = create_engine(settings, pool_size=1)
        try:
            async with engine.begin() as conn:
                window, rows = await fetch_unpublished(conn, 500)
        finally:
            await engine.dispose()
        assert len(rows) == 3
        explain = WINDOW_START
        for name, value in sorted(window.bounds().items(), key=lambda item: -len(item[0])):
            explain = explain.replace(f":{name}", sql.quote(value))
        explained = sync_db.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {explain}").fetchone()
        assert explained is not None
        plan = explained[0] if isinstance(explained[0], list) else json.loads(explained[0])
        scans = _scans(plan[0]["Plan"])
        # The window starts from the open transaction's own id and the snapshot's xmax, not
        # from its xmin: the 5,000 events published meanwhile are not read again.
        assert sum(read for _, _, read in scans) < 100, scans
        forgotten.rollback()
    assert len(await _step(settings, 500)) == 3
    _assert_feed_is_every_event_once(sync_db)


async def test_a_feed_page_near_the_end_reads_its_events_by_primary_key(
    settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    """The page after a cursor near the head: its batches, their ids, and each event by its
    primary key. Narrow rows (packed envelopes) once made a merge join over the whole primary
    key look cheaper to the planner than fifty probes (a growth bench: 59 ms at 100,000
    transfers and growing with the outbox)."""
    # As large as a real one packed: ids and hex that deflate cannot shorten.
    body = json.dumps({"specversion": "1.0", "ids": [str(uuid.uuid4()) for _ in range(6)]})
    sync_db.execute(
        "INSERT INTO outbox_events (event_id, type, subject, envelope_packed, created_at) "
        "SELECT gen_random_uuid(), 'ledger.test', 'subject-' || g, %s, now() "
        "FROM generate_series(1, 200000) AS g",
        (pack(body.encode()),),
    )
    # Published in batches of 500, as a relay's steps under a steady load leave them.
    sync_db.execute(
        "INSERT INTO outbox_batches (first_position, event_ids, published_at, window_low,"
        " window_high, window_after_id)"
        " SELECT (n - 1) * 500 + 1, array_agg(id ORDER BY id), now(), '1:1:', '1:1:', %s"
        " FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / 500 + 1 AS n"
        "       FROM outbox_events) AS e GROUP BY n",
        (WINDOW_DONE,),
    )
    sync_db.execute("ANALYZE outbox_events")
    sync_db.execute("ANALYZE outbox_batches")
    (head,) = sync_db.execute(
        "SELECT max(first_position + cardinality(event_ids) - 1) FROM outbox_batches"
    ).fetchone() or (0,)
    # The plan a pooled connection ends up with: a prepared statement's generic plan, made
    # without the cursor's value.
    prepared = FEED_PAGE.replace(":after", "$1").replace(":limit", "$2")
    sync_db.execute("SET plan_cache_mode = force_generic_plan")
    sync_db.execute(f"PREPARE feed_page (bigint, bigint) AS {prepared}")
    explained = sync_db.execute(
        f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE feed_page ({int(head) - 50}, 100)"
    ).fetchone()
    sync_db.execute("DEALLOCATE feed_page")
    sync_db.execute("RESET plan_cache_mode")
    assert explained is not None
    plan = explained[0] if isinstance(explained[0], list) else json.loads(explained[0])
    assert plan[0]["Plan"]["Actual Rows"] == 50
    scans = _scans(plan[0]["Plan"])
    events_read = sum(read for _, name, read in scans if "outbox_events" in name)
    assert events_read <= 100, scans
