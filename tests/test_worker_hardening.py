"""The expiry worker when one hold cannot be expired: the others still expire, the stuck one is
retried with backoff (and expires once the obstacle is gone), every failure is logged with the
transfer id and counted. The obstacle is real: a side connection holds the hold's debit account
row with SELECT ... FOR UPDATE, so the expiry's transaction times out on the lock."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY

from ledger.core import limits
from ledger.core.db import create_engine, create_sessionmaker
from ledger.core.settings import Settings
from ledger.worker.jobs import ExpiryRetries, expire_step, expiry_jobs, run_job
from tests.helpers import funded_pair, transfer, violations

LOCK_TIMEOUT_MS = 300  # an expiry gives up on a held row lock after this long, in these tests
DEADLINE_SECONDS = 30.0  # a bound on waiting for the worker's loop, never a timing assert
POLL_SECONDS = 0.05
FAILURES = "ledger_expiry_failures_total"


@pytest.fixture
def short_lock_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Expiries wait LOCK_TIMEOUT_MS for a row lock; requests keep their own (long) wait."""
    monkeypatch.setattr(limits, "EXPIRY_LOCK_TIMEOUT_MS", LOCK_TIMEOUT_MS)


async def two_due_holds(client: httpx.AsyncClient) -> tuple[str, str, str]:
    """(stuck, free, stuck's debit account): two holds past their timeout on separate accounts,
    the one to be stuck due first, so it comes first in the due order."""
    _, a1, b1 = await funded_pair(client, 1_000)
    _, a2, b2 = await funded_pair(client, 1_000)
    stuck = await transfer(client, a1["id"], b1["id"], 100, pending=True, timeout_seconds=1)
    free = await transfer(client, a2["id"], b2["id"], 200, pending=True, timeout_seconds=1)
    assert stuck.status_code == 201 and free.status_code == 201, (stuck.text, free.text)
    await asyncio.sleep(1.2)  # both past their timeout_at
    return stuck.json()["id"], free.json()["id"], a1["id"]


async def state_of(client: httpx.AsyncClient, transfer_id: str) -> str:
    response = await client.get(f"/v1/transfers/{transfer_id}")
    assert response.status_code == 200, response.text
    state: str = response.json()["state"]
    return state


async def eventually(check: Callable[[], Awaitable[bool]]) -> bool:
    """Whether `check` comes true while the worker's jobs run, within DEADLINE_SECONDS."""
    for _ in range(int(DEADLINE_SECONDS / POLL_SECONDS)):
        if await check():
            return True
        await asyncio.sleep(POLL_SECONDS)
    return await check()


def failures_counted() -> float:
    return REGISTRY.get_sample_value(FAILURES) or 0.0


def failure_logs(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        r.msg
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg.get("event") == "transfer.expiry_failed"
    ]


@pytest.fixture
def side(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection of someone else, in a transaction, to hold row locks with."""
    with psycopg.connect(db_url) as conn:
        yield conn


async def test_a_hold_whose_expiry_fails_does_not_stop_the_others(
    client: httpx.AsyncClient,
    settings: Settings,
    side: psycopg.Connection[Any],
    short_lock_timeout: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stuck, free, account = await two_due_holds(client)
    caplog.set_level(logging.WARNING)
    failed_before = failures_counted()
    engine = create_engine(settings, pool_size=2)
    sessionmaker = create_sessionmaker(engine)
    try:
        side.execute("SELECT id FROM accounts WHERE id = %s FOR UPDATE", (account,))
        # The stuck hold is first in due order; its lock timeout must not end the step.
        assert await expire_step(sessionmaker) == 1
        assert await state_of(client, free) == "expired"
        assert await state_of(client, stuck) == "pending"
        assert failures_counted() - failed_before == 1
        logged = failure_logs(caplog)
        assert [line["transfer_id"] for line in logged] == [stuck], logged
        side.rollback()  # the row lock is gone: the stuck hold expires on the next step
        assert await expire_step(sessionmaker) == 1
    finally:
        await engine.dispose()
    assert await state_of(client, stuck) == "expired"
    assert (await client.get(f"/v1/accounts/{account}")).json()["balances"]["available"] == 1_000
    assert await violations(settings) == []


async def test_the_worker_retries_a_stuck_hold_with_backoff_and_expires_the_rest(
    client: httpx.AsyncClient,
    settings: Settings,
    side: psycopg.Connection[Any],
    short_lock_timeout: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's own loop (both expiry jobs, as `ledger worker` runs them), with a due batch of
    one: a hold waiting for its retry is fetched past, never taking the place of a due one."""
    monkeypatch.setattr(limits, "EXPIRY_BATCH_SIZE", 1)
    stuck, free, account = await two_due_holds(client)
    _, a3, b3 = await funded_pair(client, 1_000)
    engine = create_engine(settings, pool_size=4)
    retries = ExpiryRetries(initial_ms=200, max_ms=1_000)  # the test's patience, not the worker's
    stop = asyncio.Event()
    side.execute("SELECT id FROM accounts WHERE id = %s FOR UPDATE", (account,))
    runners = [
        asyncio.create_task(run_job(job, stop))
        for job in expiry_jobs(create_sessionmaker(engine), retries)
    ]
    try:

        async def free_expired_and_stuck_booked() -> bool:
            return await state_of(client, free) == "expired" and uuid.UUID(stuck) in retries

        assert await eventually(free_expired_and_stuck_booked)
        # A hold that falls due while the stuck one waits for its retry expires as well.
        later = await transfer(client, a3["id"], b3["id"], 300, pending=True, timeout_seconds=1)
        assert later.status_code == 201, later.text

        async def expired(transfer_id: str) -> bool:
            return await state_of(client, transfer_id) == "expired"

        assert await eventually(lambda: expired(later.json()["id"]))
        assert await state_of(client, stuck) == "pending"

        side.rollback()  # the obstacle is gone: the retry job expires the stuck hold
        assert await eventually(lambda: expired(stuck))
    finally:
        stop.set()
        await asyncio.gather(*runners)
        await engine.dispose()
    assert uuid.UUID(stuck) not in retries  # forgotten once expired
    assert await violations(settings) == []


def test_the_retry_book_is_bounded_and_backs_off() -> None:
    book = ExpiryRetries(entries_max=3, initial_ms=1_000, max_ms=4_000)
    ids = [uuid.uuid4() for _ in range(5)]
    now = 100.0
    for transfer_id in ids:
        book.failed(transfer_id, now)
    assert len(book) == 3
    assert set(book.ids()) == set(ids[2:])  # the oldest entries made room
    assert book.ready(now) == []  # none is retried before its backoff
    assert set(book.ready(now + 1.0)) == set(ids[2:])
    # Consecutive failures double the wait up to the cap (drawn from its upper half: jitter).
    waits = [book.failed(ids[4], now) for _ in range(6)]
    assert all(0.5 <= wait <= 4.0 for wait in waits), waits
    assert waits[-1] >= 2.0
    book.forget(ids[4])
    assert ids[4] not in book and len(book) == 2
