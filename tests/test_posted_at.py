"""Time follows sequence per account: a transaction's time is read from the database clock after
its locks are held, so a request that waited on a lock can never post with a time older than
the transfers that committed on the same account while it waited, and `balance?as_of` for a
past instant does not change later.

The race is real: a side connection holds one account row, a first request waits on it, a
second request on another account of the first commits meanwhile."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psycopg
import pytest

from ledger.core.db import create_engine, create_sessionmaker
from ledger.core.settings import Settings
from ledger.worker.jobs import expire_step
from tests.helpers import app_client, create_account, transfer, violations
from tests.stored_events import ENVELOPE_COLUMNS, envelope

DEADLINE_SECONDS = 30.0  # for waiting on real requests and backends; never an assertion


def lock_waiters(db: psycopg.Connection[Any]) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return int(row[0]) if row else 0


async def until_waiting(db: psycopg.Connection[Any]) -> None:
    give_up = time.monotonic() + DEADLINE_SECONDS
    while lock_waiters(db) < 1:
        if time.monotonic() > give_up:
            raise AssertionError("the first request never waited on the held row")
        await asyncio.sleep(0.02)


def db_clock(db: psycopg.Connection[Any]) -> dt.datetime:
    row = db.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    value: dt.datetime = row[0]
    return value


def entry_times(db: psycopg.Connection[Any], account: str) -> list[tuple[int, dt.datetime]]:
    return [
        (row[0], row[1])
        for row in db.execute(
            "SELECT sequence, posted_at FROM entries WHERE account_id = %s ORDER BY sequence",
            (account,),
        )
    ]


def event_times(db: psycopg.Connection[Any], account: str) -> list[tuple[int, dt.datetime]]:
    return [
        (row[0], dt.datetime.fromisoformat(envelope(row[1], row[2])["time"]))
        for row in db.execute(
            f"SELECT sequence, {ENVELOPE_COLUMNS} FROM outbox_events e"
            " WHERE subject = %s AND sequence IS NOT NULL ORDER BY sequence",
            (account,),
        )
    ]


def non_decreasing(times: list[tuple[int, dt.datetime]]) -> bool:
    return all(earlier[1] <= later[1] for earlier, later in itertools.pairwise(times))


async def three_accounts(client: httpx.AsyncClient) -> tuple[str, str, str]:
    """(low, mid, other): funded credit-normal accounts, `low` before `mid` in lock order."""
    source = await create_account(client, normal_balance="debit", min_balance=None)
    made = sorted([uuid.UUID((await create_account(client))["id"]) for _ in range(3)])
    low, mid, other = (str(i) for i in made)
    for account in (low, mid, other):
        assert (await transfer(client, source["id"], account, 1_000)).status_code == 201
    return low, mid, other


async def as_of(client: httpx.AsyncClient, account: str, when: dt.datetime) -> Any:
    response = await client.get(
        f"/v1/accounts/{account}/balance", params={"as_of": when.isoformat()}
    )
    assert response.status_code == 200, response.text
    return response.json()


Waiter = Callable[[httpx.AsyncClient, str, str], Awaitable[httpx.Response]]


async def batch_of_one(client: httpx.AsyncClient, low: str, mid: str) -> httpx.Response:
    body = {
        "atomic": False,
        "transfers": [{"debit_account_id": low, "credit_account_id": mid, "amount": 5}],
    }
    return await client.post("/v1/transfers/batch", json=body)


async def post_pending(client: httpx.AsyncClient, low: str, mid: str) -> httpx.Response:
    """Set up outside the race: a pending transfer; its post is the request that waits."""
    created = await transfer(client, low, mid, 5, pending=True)
    assert created.status_code == 201, created.text
    return created


@pytest.mark.parametrize("path", ["create", "post"])
async def test_a_request_that_waited_on_a_lock_posts_after_those_that_did_not(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any], path: str
) -> None:
    """The waiting request locks `low` (held) before `mid`; meanwhile a transfer on `mid`
    commits, sent to another API process (one process would queue it behind the waiter). The
    waiter's entry on `mid` comes later in sequence, so it must not be earlier in time, and the
    balance as of an instant before it committed must not change."""
    low, mid, other = await three_accounts(client)
    pending_id = None
    if path == "post":
        pending_id = (await post_pending(client, low, mid)).json()["id"]
    async with app_client(settings) as elsewhere:
        with psycopg.connect(settings.database_url or "") as holder:
            holder.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (low,))
            if pending_id is None:
                waiter = asyncio.create_task(batch_of_one(client, low, mid))
            else:
                waiter = asyncio.create_task(client.post(f"/v1/transfers/{pending_id}/post"))
            await until_waiting(sync_db)
            instant = db_clock(sync_db)  # after the waiter began, before the other commits
            assert (await transfer(elsewhere, mid, other, 3)).status_code == 201
            before = await as_of(elsewhere, mid, instant)
            holder.rollback()
    assert (await waiter).status_code in (200, 201), (await waiter).text
    after = await as_of(client, mid, instant)
    assert after == before
    times = entry_times(sync_db, mid)
    assert len(times) == 3  # funding, the other transfer, the waiter
    assert non_decreasing(times), times
    assert non_decreasing(event_times(sync_db, mid))
    assert await violations(settings) == []


async def test_an_expiry_that_waited_on_a_lock_is_not_older_than_what_committed_meanwhile(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    """The worker's expiry path: it releases the hold after waiting on `low`; its events on
    `mid` follow in sequence the transfer that committed meanwhile, and in time too."""
    low, mid, other = await three_accounts(client)
    created = await transfer(client, low, mid, 5, pending=True, timeout_seconds=1)
    assert created.status_code == 201, created.text
    timeout_at = dt.datetime.fromisoformat(created.json()["timeout_at"])
    give_up = time.monotonic() + DEADLINE_SECONDS
    while db_clock(sync_db) <= timeout_at and time.monotonic() < give_up:  # noqa: ASYNC110
        await asyncio.sleep(0.1)  # the database's clock passes the timeout
    engine = create_engine(settings, pool_size=2)
    try:
        with psycopg.connect(settings.database_url or "") as holder:
            holder.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (low,))
            expiry = asyncio.create_task(expire_step(create_sessionmaker(engine)))
            await until_waiting(sync_db)
            assert (await transfer(client, mid, other, 3)).status_code == 201
            holder.rollback()
        assert await expiry == 1
    finally:
        await engine.dispose()
    times = event_times(sync_db, mid)
    assert len(times) == 5  # created, funded, the hold, the other transfer, the release
    assert non_decreasing(times), times
    assert await violations(settings) == []


async def test_verify_names_an_account_whose_time_runs_backwards(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    _low, mid, other = await three_accounts(client)
    assert (await transfer(client, mid, other, 3)).status_code == 201
    assert await violations(settings) == []
    sync_db.execute("SET session_replication_role = replica")  # past the append-only trigger
    sync_db.execute(
        "UPDATE entries SET posted_at = posted_at - interval '1 hour'"
        " WHERE account_id = %s AND sequence = (SELECT max(sequence) FROM entries"
        " WHERE account_id = %s)",
        (mid, mid),
    )
    found = await violations(settings)
    assert any("posted_at" in line and mid in line for line in found), found
