"""/metrics and /ready are unauthenticated: however often they are called, the database does a
bounded amount of work. Scrapes that arrive together share one outbox status query (at most one
per OUTBOX_STATUS_INTERVAL_SECONDS per process), the backlog is counted up to a cap, and the
status query has its own short timeouts. The value a scrape reports is still read after the
scrape arrived: what was committed before it is counted."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from litestar import Litestar
from prometheus_client.parser import text_string_to_metric_families

from ledger.app import create_app
from ledger.core import limits
from ledger.core.settings import Settings
from tests.helpers import create_account

SCRAPES = 40  # a burst of unauthenticated requests arriving together


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Litestar]:
    """The real app, kept at hand to count the statements its engine sends."""
    app = create_app(settings)
    try:
        yield app
    finally:
        await app.state.engine.dispose()


@pytest.fixture
async def anonymous(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as http:
        yield http


@pytest.fixture
def statements(app: Litestar) -> Iterator[list[str]]:
    """Every SQL statement the app's engine sends, as sent."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    sync_engine = app.state.engine.sync_engine
    sa.event.listen(sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(sync_engine, "before_cursor_execute", record)


def status_queries(sent: list[str]) -> int:
    return sum("outbox_events" in statement for statement in sent)


def backlog_of(response: httpx.Response) -> float:
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "ledger_outbox_backlog":
                return float(sample.value)
    raise AssertionError("no ledger_outbox_backlog in the scrape")


def unpublished(db: psycopg.Connection[Any]) -> int:
    row = db.execute(
        "SELECT count(*) FROM outbox_events e "
        "WHERE NOT EXISTS (SELECT 1 FROM outbox_feed f WHERE f.id = e.id)"
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_burst_of_scrapes_costs_one_status_query_and_reads_after_it_arrived(
    anonymous: httpx.AsyncClient,
    client: httpx.AsyncClient,
    statements: list[str],
    sync_db: psycopg.Connection[Any],
) -> None:
    await create_account(client)
    responses = await asyncio.gather(*(anonymous.get("/metrics") for _ in range(SCRAPES)))
    expected = unpublished(sync_db)
    assert expected > 0
    assert [backlog_of(r) for r in responses] == [expected] * SCRAPES
    assert status_queries(statements) == 1

    # Events committed after that burst are counted by the next scrape, which waits for the
    # interval to pass rather than answer the previous count.
    await create_account(client)
    again = await asyncio.gather(*(anonymous.get("/metrics") for _ in range(SCRAPES)))
    assert unpublished(sync_db) > expected
    assert [backlog_of(r) for r in again] == [unpublished(sync_db)] * SCRAPES
    assert status_queries(statements) == 2


async def test_the_backlog_is_counted_up_to_its_cap(
    anonymous: httpx.AsyncClient,
    client: httpx.AsyncClient,
    sync_db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "OUTBOX_BACKLOG_COUNT_MAX", 2)
    for _ in range(3):
        await create_account(client)
    assert unpublished(sync_db) == 3  # one ledger.account.created event each
    assert backlog_of(await anonymous.get("/metrics")) == 2  # a floor: at least this many


async def test_a_scrape_answers_while_the_outbox_table_is_locked(
    anonymous: httpx.AsyncClient,
    client: httpx.AsyncClient,
    db_url: str,
    sync_db: psycopg.Connection[Any],
) -> None:
    """A migration or VACUUM FULL holding the table: the scrape gives up on its own short timeout
    and reports the backlog unknown (NaN), then reads it again once the table is free."""
    await create_account(client)
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE outbox_events IN ACCESS EXCLUSIVE MODE")
        assert math.isnan(backlog_of(await anonymous.get("/metrics")))
        holder.rollback()
    assert backlog_of(await anonymous.get("/metrics")) == unpublished(sync_db)


async def test_a_burst_of_readiness_probes_costs_one_query(
    anonymous: httpx.AsyncClient, statements: list[str]
) -> None:
    responses = await asyncio.gather(*(anonymous.get("/ready") for _ in range(SCRAPES)))
    assert [r.status_code for r in responses] == [200] * SCRAPES
    assert {r.json()["status"] for r in responses} == {"ready"}
    assert sum("alembic_version" in statement for statement in statements) == 1
