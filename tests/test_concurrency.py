"""Many clients moving money both ways between a handful of accounts at once (A->B while B->A):
several app instances with their own engines (group commit on and off) and a real `ledger serve`
process, all on one database. Money is conserved, no floor breaks, every acknowledged transfer
is stored exactly once, and PostgreSQL saw no deadlock."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

from ledger.cli.main import ensure_admin_key
from ledger.core.settings import Settings
from ledger.embedded import LOOPBACK, free_port
from tests.helpers import app_client, create_account, transfer
from tests.processes import ledger_env

ACCOUNTS = 4
FUNDING = 5_000
WORKERS_PER_CLIENT = 5
REQUESTS_PER_WORKER = 8
LEDGER = str(Path(sys.executable).parent / "ledger")
SERVE_START_TIMEOUT_SECONDS = 30


def deadlocks(db: psycopg.Connection[Any], database: str) -> int:
    db.execute("SELECT pg_stat_clear_snapshot()")
    row = db.execute(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = %s", (database,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for_other_backends_to_leave(db: psycopg.Connection[Any], database: str) -> None:
    """A backend flushes its statistics when it exits: wait until ours is the only one left."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
        if row is not None and row[0] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("connections to the test database did not close")


@contextlib.contextmanager
def serve_process(settings: Settings) -> Iterator[str]:
    """`ledger serve` as a real process on a loopback port; stopped (SIGTERM) on exit."""
    port = free_port()
    env = ledger_env(settings.database_url or "", LEDGER_ADMIN_KEY=settings.admin_key or "")
    if settings.database_direct_url:  # the request path through a pooler (tests/test_pooler.py)
        env["LEDGER_DATABASE_DIRECT_URL"] = settings.database_direct_url
    process = subprocess.Popen(
        [LEDGER, "serve", "--host", LOOPBACK, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_SECONDS
        while True:
            assert process.poll() is None, "ledger serve exited at start"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ledger serve did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def worker(http: httpx.AsyncClient, ids: list[str], seed: int, acked: dict[str, int]) -> int:
    """Random transfers (single, and now and then a mixed batch) in both directions."""
    rng = random.Random(seed)
    refused = 0
    for _ in range(REQUESTS_PER_WORKER):
        debit, credit = rng.sample(ids, 2)
        if rng.random() < 0.2:
            items = [
                {"debit_account_id": debit, "credit_account_id": credit, "amount": 3},
                {"debit_account_id": credit, "credit_account_id": debit, "amount": 2},
            ]
            response = await http.post(
                "/v1/transfers/batch", json={"atomic": rng.random() < 0.5, "transfers": items}
            )
            assert response.status_code == 200, response.text
            for result in response.json()["results"]:
                if result["status"] == 201:
                    acked[result["transfer"]["id"]] = result["transfer"]["amount"]
                else:
                    assert result["error"]["code"] in ("insufficient_funds", "not_committed")
            continue
        response = await transfer(http, debit, credit, rng.randint(1, 60))
        if response.status_code == 201:
            body = response.json()
            assert body["id"] not in acked
            acked[body["id"]] = body["amount"]
        else:
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "insufficient_funds"
            refused += 1
    return refused


async def test_transfers_both_ways_from_many_clients_at_once(
    settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    database = (settings.database_url or "").rsplit("/", 1)[1]
    await ensure_admin_key(settings)
    acked: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {settings.admin_key}"}
    with serve_process(settings) as served_url:
        async with (
            app_client(settings) as grouped,
            app_client(settings) as grouped_too,
            app_client(settings.with_(group_commit=False)) as single,
            app_client(settings.with_(group_commit=False)) as single_too,
            httpx.AsyncClient(base_url=served_url, headers=headers, timeout=30) as served,
        ):
            source = await create_account(grouped, normal_balance="debit", min_balance=None)
            ids = []
            for _ in range(ACCOUNTS):
                account = await create_account(grouped)
                ids.append(account["id"])
                funded = await transfer(grouped, source["id"], account["id"], FUNDING)
                assert funded.status_code == 201
            before = deadlocks(sync_db, database)
            clients = [grouped, grouped_too, single, single_too, served]
            await asyncio.gather(
                *(
                    worker(http, ids, seed=100 * n + w, acked=acked)
                    for n, http in enumerate(clients)
                    for w in range(WORKERS_PER_CLIENT)
                )
            )
    assert len(acked) > len(clients) * WORKERS_PER_CLIENT * REQUESTS_PER_WORKER // 2

    # every acknowledged transfer is stored, once, with its amount; nothing else moved
    rows = sync_db.execute(
        "SELECT id::text, amount FROM transfers WHERE debit_account_id <> %s", (source["id"],)
    ).fetchall()
    assert len(rows) == len(acked)
    assert dict(rows) == acked

    # money is conserved and no floor is broken
    balances = sync_db.execute(
        "SELECT posted_credits - posted_debits, min_balance, pending_debits FROM accounts"
        " WHERE id = ANY(%s::uuid[])",
        (ids,),
    ).fetchall()
    assert sum(b[0] for b in balances) == ACCOUNTS * FUNDING
    assert all(posted - pending >= floor for posted, floor, pending in balances), balances
    totals = sync_db.execute(
        "SELECT sum(posted_debits), sum(posted_credits) FROM accounts"
    ).fetchone()
    assert totals is not None and totals[0] == totals[1]

    # no deadlock happened: the ordered locking held (read once every other connection closed,
    # since a backend flushes its counters when it exits)
    wait_for_other_backends_to_leave(sync_db, database)
    assert deadlocks(sync_db, database) == before
