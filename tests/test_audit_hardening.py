"""The audit sealer's own connection and lock, late seals that are no tamper alarm, and a
verification that leaves the API's event loop free.

1. A sealer whose connection fails in the middle of a pass (its statement cancelled, or its
   backend killed) throws that connection away with its session lock: the worker's pool never
   gets it, and the next pass reconnects, takes the lock again and seals the rest.
2. Records sealed long after they were written (an outage, a pass cut short, a transaction that
   waits for a lock) verify; a record put into the sealed past behind the service's back is
   still named.
3. `GET /v1/audit/verify` hashes off the event loop (a concurrent request is answered while it
   hashes), one verification at a time per process (another is answered 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from httpx import AsyncClient
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ledger.audit import chain
from ledger.audit import repository as repo
from ledger.audit.sealer import AuditSealer, _start_horizon
from ledger.audit.verify import VerifyReport, verify_chain
from ledger.core import limits
from ledger.core.db import create_engine, create_sessionmaker, run_in_transaction
from ledger.core.errors import ServiceUnavailable
from ledger.core.settings import Settings
from tests.helpers import funded_pair, transfer

BATCH = 4  # records per sealing transaction here, so that a pass has several
GRACE_SECONDS = 1.0  # the insertion grace, shortened: "long after" is a second, not minutes
DEADLINE_SECONDS = 30
POLL_SECONDS = 0.05

LOCK_HOLDERS_SQL = """
SELECT l.pid FROM pg_locks l
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid = %s AND l.objid = %s
"""
SEALER_BACKEND_SQL = """
SELECT pid FROM pg_stat_activity
 WHERE datname = current_database() AND application_name LIKE 'ledger-sealer:%%'
"""


# -- helpers -------------------------------------------------------------------------------------


async def _history(client: AsyncClient, transfers: int) -> dict[str, Any]:
    """A funded pair and `transfers` transfers; returns the account the transfers debit."""
    _, a, b = await funded_pair(client, 1_000_000)
    for _ in range(transfers):
        response = await transfer(client, a["id"], b["id"], 1)
        assert response.status_code == 201, response.text
    return a


def _count(db: psycopg.Connection[Any], table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[call-overload]
    assert row is not None
    return int(row[0])


def _lock_holders(db: psycopg.Connection[Any]) -> list[int]:
    args = (repo.SEALER_LOCK["lock_class"], repo.SEALER_LOCK["key"])
    return [int(pid) for (pid,) in db.execute(LOCK_HOLDERS_SQL, args).fetchall()]


def _sealer_backends(db: psycopg.Connection[Any]) -> list[int]:
    return [int(pid) for (pid,) in db.execute(SEALER_BACKEND_SQL).fetchall()]


def _backend_alive(db: psycopg.Connection[Any], pid: int) -> bool:
    row = db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return bool(row and row[0])


async def _wait_for(check: Callable[[], bool], what: str) -> None:
    for _ in range(int(DEADLINE_SECONDS / POLL_SECONDS)):
        if check():
            return
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"gave up waiting for {what}")


async def _verify_with_short_grace(settings: Settings) -> VerifyReport:
    engine = create_engine(settings, pool_size=1)
    try:

        async def work(session: AsyncSession) -> VerifyReport:
            return await verify_chain(session, grace_seconds=GRACE_SECONDS)

        return await run_in_transaction(create_sessionmaker(engine), work)
    finally:
        await engine.dispose()


async def _verify_http(client: AsyncClient) -> dict[str, Any]:
    response = await client.get("/v1/audit/verify")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


Fault = Callable[[Awaitable[None]], Awaitable[None]]


def _terminate(db_url: str, victims: list[int]) -> Fault:
    """Kill the sealer's backend (and wait until it is gone) before its batch is sent."""

    async def fault(insert: Awaitable[None]) -> None:
        def kill() -> None:
            with psycopg.connect(db_url, autocommit=True) as side:
                [pid] = _sealer_backends(side)
                victims.append(pid)
                side.execute("SELECT pg_terminate_backend(%s, %s)", (pid, DEADLINE_SECONDS * 1000))

        await asyncio.to_thread(kill)
        await insert

    return fault


def _cancel(db_url: str, victims: list[int]) -> Fault:
    """Hold the seal table so that the batch's INSERT waits, then cancel that statement (as an
    operator, or a statement timeout, would): the connection itself stays alive."""

    def cancel_when_waiting() -> None:
        with psycopg.connect(db_url, autocommit=True) as side:
            for _ in range(int(DEADLINE_SECONDS / POLL_SECONDS)):
                row = side.execute(SEALER_BACKEND_SQL + " AND wait_event_type = 'Lock'").fetchone()
                if row is not None:
                    victims.append(int(row[0]))
                    side.execute("SELECT pg_cancel_backend(%s)", (row[0],))
                    return
                threading.Event().wait(POLL_SECONDS)
        raise AssertionError("the sealer's INSERT never waited for the lock")

    async def fault(insert: Awaitable[None]) -> None:
        with psycopg.connect(db_url) as holder:
            holder.execute("LOCK TABLE audit_seals IN EXCLUSIVE MODE")
            waiting = asyncio.ensure_future(insert)
            await asyncio.to_thread(cancel_when_waiting)
            holder.rollback()
            await waiting

    return fault


def _fail_batch(monkeypatch: pytest.MonkeyPatch, number: int, fault: Fault) -> None:
    """The sealer's `number`-th seal batch meets `fault` (every other batch goes through)."""
    original = repo.insert_seals
    calls = 0

    async def insert_seals(ex: repo.Executor, links: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == number:
            await fault(original(ex, links))
            return
        await original(ex, links)

    monkeypatch.setattr(repo, "insert_seals", insert_seals)


async def _assert_pool_clean(engine: AsyncEngine, db: psycopg.Connection[Any]) -> None:
    """Every connection of the worker's pool works and is a plain one: none is the sealer's,
    with its idle timeouts and its session lock."""
    holders = _lock_holders(db)
    async with engine.connect() as first, engine.connect() as second:
        for conn in (first, second):
            name, idle, pid = (
                await conn.execute(
                    sa.text(
                        "SELECT current_setting('application_name'), "
                        "current_setting('idle_session_timeout'), pg_backend_pid()"
                    )
                )
            ).one()
            assert name == "ledger"
            assert idle == "0"
            assert pid not in holders


@pytest.fixture
def superuser(sync_db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """The test database user is a superuser: switch the triggers off the way an intruder would."""
    sync_db.execute("SET session_replication_role = replica")
    yield sync_db
    sync_db.execute("SET session_replication_role = origin")


# -- 1. the sealer's own connection --------------------------------------------------------------


@pytest.mark.parametrize("fault", ["cancel", "terminate"])
async def test_a_sealer_connection_that_fails_mid_pass_never_reaches_the_pool(
    fault: str,
    client: AsyncClient,
    settings: Settings,
    db_url: str,
    sync_db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _history(client, transfers=10)
    total = _count(sync_db, "audit_records")
    assert total > 2 * BATCH
    engine = create_engine(settings, pool_size=2)  # the worker's shared pool
    sealer = AuditSealer(engine, batch_size=BATCH)
    victims: list[int] = []
    make_fault = _cancel if fault == "cancel" else _terminate
    _fail_batch(monkeypatch, 2, make_fault(db_url, victims))
    try:
        with pytest.raises((DBAPIError, ServiceUnavailable)):
            await sealer.step()
        assert _count(sync_db, "audit_seals") == BATCH  # the pass was cut short after one batch
        [failed] = victims
        # The pool never got the failed connection: its connections are plain and healthy.
        await _assert_pool_clean(engine, sync_db)
        # The failed connection was closed, so its session lock went with it...
        await _wait_for(lambda: _lock_holders(sync_db) == [], "the failed sealer's lock to go")
        await _wait_for(lambda: _sealer_backends(sync_db) == [], "the failed sealer's backend")

        # ...and the next pass connects anew, takes the lock and seals the rest.
        assert await sealer.step() == total - BATCH
        [holder] = _lock_holders(sync_db)
        assert holder != failed
        assert _sealer_backends(sync_db) == [holder]
        await _assert_pool_clean(engine, sync_db)
    finally:
        await sealer.close()
        await engine.dispose()
    await _wait_for(lambda: _lock_holders(sync_db) == [], "the lock to go with close()")
    assert _count(sync_db, "audit_seals") == total
    report = await _verify_http(client)
    assert report["ok"] is True, report
    assert report["checked"] == total


# -- 2. late seals are no alarm; insertions still are --------------------------------------------


async def test_a_backlog_sealed_late_by_a_pass_cut_short_verifies(
    client: AsyncClient,
    settings: Settings,
    db_url: str,
    sync_db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "AUDIT_INSERTION_GRACE_SECONDS", GRACE_SECONDS)
    debit = await _history(client, transfers=2)
    engine = create_engine(settings, pool_size=1)
    sealer = AuditSealer(engine, batch_size=BATCH, grace_seconds=GRACE_SECONDS)
    try:
        assert await sealer.step() > 0
        sealed_before = _count(sync_db, "audit_seals")

        # An outage longer than the grace period: records pile up unsealed.
        _, a, b = await funded_pair(client, 1_000)
        for _ in range(3 * BATCH):
            assert (await transfer(client, a["id"], b["id"], 1)).status_code == 201
        await asyncio.sleep(GRACE_SECONDS * 1.5)

        # The first pass after it dies after one batch (the database restarts, say).
        _fail_batch(monkeypatch, 2, _terminate(db_url, []))
        with pytest.raises((DBAPIError, ServiceUnavailable)):
            await sealer.step()
        assert _count(sync_db, "audit_seals") == sealed_before + BATCH
        # Half a backlog is no tampering: its records wait for the next pass.
        partial = await _verify_with_short_grace(settings)
        assert partial.ok is True, partial
        assert partial.unsealed > 0
        assert (await _verify_http(client))["ok"] is True

        # A transfer that has begun writing waits for a lock longer than the grace period while
        # another pass seals the rest of the backlog and a newer record.
        with psycopg.connect(db_url) as holder:
            holder.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (debit["id"],))
            slow = asyncio.ensure_future(
                client.post(
                    "/v1/transfers",
                    json={
                        "debit_account_id": debit["id"],
                        "credit_account_id": b["id"],
                        "amount": 1,
                    },
                    headers={"Idempotency-Key": str(uuid.uuid4())},
                )
            )
            await _wait_for(lambda: _waiting_for_lock(sync_db), "the transfer to wait")
            await funded_pair(client, 1)
            await asyncio.sleep(GRACE_SECONDS * 1.5)
            assert await sealer.step() > 0
            holder.rollback()
            assert (await slow).status_code == 201
        assert await sealer.step() > 0
    finally:
        await sealer.close()
        await engine.dispose()

    unsealed = sync_db.execute(
        "SELECT count(*) FROM audit_records r WHERE NOT EXISTS "
        "(SELECT 1 FROM audit_seals s WHERE s.record_id = r.id)"
    ).fetchone()
    assert unsealed == (0,)
    report = await _verify_with_short_grace(settings)
    assert report.ok is True, report
    assert report.checked == _count(sync_db, "audit_records")
    assert (await _verify_http(client))["ok"] is True


def _waiting_for_lock(db: psycopg.Connection[Any]) -> bool:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND application_name = 'ledger'"
    ).fetchone()
    return bool(row and row[0])


async def test_a_record_claiming_an_old_transaction_is_named_and_never_sealed(
    client: AsyncClient, settings: Settings, superuser: psycopg.Connection[Any]
) -> None:
    """A superuser copies a sealed record's transaction id onto a new record with a fresh time and
    squeezes it between sealed records: its time says nothing, but its transaction had ended
    before a pass that sealed everything of that age."""
    await _history(client, transfers=2)
    engine = create_engine(settings, pool_size=1)
    sealer = AuditSealer(engine)
    try:
        assert await sealer.step() > 0
        await _history(client, transfers=2)
        assert await sealer.step() > 0
        first = superuser.execute(
            "SELECT seq, xact_id FROM audit_records ORDER BY seq LIMIT 1"
        ).fetchone()
        assert first is not None
        superuser.execute("ALTER TABLE audit_records DROP CONSTRAINT uq_audit_records_seq")
        forged = uuid.uuid4()
        superuser.execute(
            "INSERT INTO audit_records (id, seq, xact_id, at, actor_id, actor_name, action, "
            "object_type, object_id, request_id, trace_id, client_addr, data, data_text) "
            "SELECT %s, seq, xact_id, now(), actor_id, actor_name, 'transfer.create', "
            "       'transfer', %s, request_id, trace_id, client_addr, data, data_text "
            "  FROM audit_records WHERE seq = %s",
            (forged, str(uuid.uuid4()), first[0]),
        )
        report = await _verify_http(client)
        assert report["ok"] is False
        assert report["first_invalid_id"] == str(forged)
        assert report["unsealed"] == 1

        # The sealer does not take it into the chain either: still named.
        assert await sealer.step() == 0
        assert (await _verify_http(client))["first_invalid_id"] == str(forged)
    finally:
        await sealer.close()
        await engine.dispose()


def test_a_chain_restored_from_another_cluster_does_not_stop_the_sealer() -> None:
    """A dump restored into a new cluster brings seals whose horizon is ahead of the new
    cluster's transaction ids: a sealer starting from it would never seal a new record."""
    facts = chain.PassFacts(horizon_xid=10_000, next_xid=10_001)
    head = repo.ChainHead(
        seq=5, hash=chain.GENESIS_HASH, sealed_at=dt.datetime.now(dt.UTC), facts=facts
    )
    assert _start_horizon(None, head, xmax=900) == 0
    assert _start_horizon(None, head, xmax=20_000) == 10_000
    assert _start_horizon(None, None, xmax=900) == 0
    assert _start_horizon(7, head, xmax=900) == 7  # a sealer's own full pass is of this cluster


# -- 3. verification off the event loop, one at a time ------------------------------------------


async def test_verify_hashes_off_the_event_loop_one_at_a_time(
    client: AsyncClient,
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, a, _ = await funded_pair(client, 1)
    for _ in range(3):
        response = await client.post(
            "/v1/transfers/batch",
            json={
                "atomic": True,
                "transfers": [
                    {"debit_account_id": source["id"], "credit_account_id": a["id"], "amount": 1}
                    for _ in range(limits.BATCH_TRANSFERS_MAX)
                ],
            },
        )
        assert response.status_code == 200, response.text
    engine = create_engine(settings, pool_size=1)
    sealer = AuditSealer(engine)
    try:
        while await sealer.step():
            pass
    finally:
        await sealer.close()
        await engine.dispose()
    total = _count(sync_db, "audit_seals")
    assert total > 3 * limits.BATCH_TRANSFERS_MAX

    # The first hash of the verification waits until the test has had its answers: if hashing
    # ran on the event loop, nothing else could be answered meanwhile.
    hashing, answered = threading.Event(), threading.Event()
    answered_while_hashing: list[bool] = []
    original = chain.seal_hash

    def seal_hash(*args: Any, **kwargs: Any) -> str:
        if not hashing.is_set():
            hashing.set()
            answered_while_hashing.append(answered.wait(DEADLINE_SECONDS))
        return original(*args, **kwargs)

    monkeypatch.setattr(chain, "seal_hash", seal_hash)
    finished: list[str] = []

    async def verify() -> Any:
        response = await client.get("/v1/audit/verify")
        finished.append("verify")
        return response

    running = asyncio.ensure_future(verify())
    await _wait_for(hashing.is_set, "the verification to start hashing")
    health = await client.get("/health")
    finished.append("health")
    account = await client.get(f"/v1/accounts/{a['id']}")
    finished.append("account")
    second = await client.get("/v1/audit/verify")
    answered.set()
    first = await running

    assert answered_while_hashing == [True]
    assert finished == ["health", "account", "verify"]
    assert health.status_code == 200
    assert account.status_code == 200
    assert second.status_code == 503, second.text
    assert second.json()["code"] == "audit_verify_busy"
    assert int(second.headers["Retry-After"]) > 0
    assert first.status_code == 200, first.text
    assert first.json()["ok"] is True
    assert first.json()["checked"] == total

    # Once it is done, the next verification runs.
    again = await _verify_http(client)
    assert again["ok"] is True
    assert again["checked"] == total
