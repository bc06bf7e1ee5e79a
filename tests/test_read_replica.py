"""LEDGER_DATABASE_READ_URL (contract 9.3): reads that may lag go to a streaming standby, and a
client never reads older state than what it just wrote. The standby's replay is paused (WAL keeps
arriving and being flushed, so synchronous commits go on, but nothing becomes visible there):
every read a client makes after its write still shows that write, served by the primary; once
replay resumes, the same reads are served by the standby. Reads that return an ETag, and writes,
never touch the standby."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY

from ledger.cli.main import ensure_admin_key
from ledger.core import migrate
from ledger.core.settings import Settings
from ledger.embedded import LOOPBACK, free_port
from outbox.relay import Relay
from tests.helpers import app_client, create_account, transfer
from tests.replication import ReplicatedPair

ADMIN = "lk_test_admin_secret_0123456789"
CLIENTS = 6
ROUNDS = 8
FAR_FUTURE = "2999-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicatedPair]:
    replicated = ReplicatedPair(Path(tempfile.mkdtemp(prefix="ledger-test-replica-"))).start()
    try:
        migrate.upgrade(replicated.url())
        yield replicated
    finally:
        replicated.remove()


def reads(target: str) -> float:
    return REGISTRY.get_sample_value("ledger_db_reads_total", {"target": target}) or 0.0


def on_standby(pair: ReplicatedPair, sql: str) -> Any:
    with psycopg.connect(pair.standby.url("ledger"), autocommit=True) as conn:
        return conn.execute(sql).fetchone()


@pytest.fixture
async def client(pair: ReplicatedPair) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=pair.primary.url("ledger"),
        database_read_url=pair.standby.url("ledger"),
        admin_key=ADMIN,
        log_format="json",
    )
    await ensure_admin_key(settings)
    async with app_client(settings) as http:
        yield http


async def read_back(
    http: httpx.AsyncClient, account: str, transfer_id: str, *, posted: int
) -> None:
    """Every lagging read this client makes after its write shows the write: the statement,
    the list of transfers, the balance as of now."""
    entries = (await http.get(f"/v1/accounts/{account}/entries")).json()["data"]
    assert transfer_id in {e["transfer_id"] for e in entries}
    listed = await http.get("/v1/transfers", params={"account_id": account, "limit": 200})
    assert transfer_id in {t["id"] for t in listed.json()["data"]}
    balance = await http.get(f"/v1/accounts/{account}/balance", params={"as_of": FAR_FUTURE})
    assert balance.json()["posted"] == posted, balance.text


async def feed_has(http: httpx.AsyncClient, transfer_id: str) -> bool:
    page = (await http.get("/v1/events", params={"limit": 1000})).json()["data"]
    return any(event["subject"] == transfer_id for event in page)


async def publish(pair: ReplicatedPair) -> None:
    """One relay step on the primary (no broker: the events get their feed positions)."""
    relay = Relay(Settings(database_url=pair.primary.url("ledger")))
    try:
        while await relay.step():
            pass
    finally:
        await relay.close()


async def test_a_paused_standby_never_serves_a_read_older_than_the_clients_write(
    client: httpx.AsyncClient, pair: ReplicatedPair
) -> None:
    source = await create_account(client, normal_balance="debit", min_balance=None)
    sink = await create_account(client)
    on_standby(pair, "SELECT pg_wal_replay_pause()")
    try:
        behind_before, standby_before = reads("primary_standby_behind"), reads("standby")
        response = await transfer(client, source["id"], sink["id"], 25)
        assert response.status_code == 201, response.text
        moved = response.json()["id"]
        # The ETag read and the write ran on the primary; the standby has not replayed either.
        assert (await client.get(f"/v1/transfers/{moved}")).status_code == 200
        (replayed,) = on_standby(pair, f"SELECT count(*) FROM transfers WHERE id = '{moved}'")
        assert replayed == 0, "replay is paused: the standby must not have the transfer yet"
        await read_back(client, sink["id"], moved, posted=25)
        await publish(pair)
        assert await feed_has(client, moved)
        assert reads("primary_standby_behind") >= behind_before + 4
        assert reads("standby") == standby_before
    finally:
        on_standby(pair, "SELECT pg_wal_replay_resume()")
    standby_before = reads("standby")
    await read_back(client, sink["id"], moved, posted=25)
    assert await feed_has(client, moved)
    assert reads("standby") >= standby_before + 4


async def test_many_clients_each_read_their_own_writes_from_the_standby(
    client: httpx.AsyncClient, pair: ReplicatedPair
) -> None:
    """Write, then read at once, from several clients at a time, replay running: no read ever
    misses its client's write, wherever it was served."""
    source = await create_account(client, normal_balance="debit", min_balance=None)

    async def one_client() -> None:
        sink = await create_account(client)
        for n in range(1, ROUNDS + 1):
            response = await transfer(client, source["id"], sink["id"], 3)
            assert response.status_code == 201, response.text
            await read_back(client, sink["id"], response.json()["id"], posted=3 * n)

    served = {t: reads(t) for t in ("standby", "primary_standby_behind")}
    await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
    counts = {t: reads(t) - before for t, before in served.items()}
    assert sum(counts.values()) >= CLIENTS * ROUNDS * 3
    assert counts["standby"] > 0, "no read at all reached the standby"
    print(f"\nread replica: reads right after their own write, by where they ran: {counts}")


async def test_a_standby_that_is_away_sends_reads_to_the_primary(pair: ReplicatedPair) -> None:
    nobody = f"postgresql://postgres@{LOOPBACK}:{free_port()}/ledger"
    settings = Settings(
        database_url=pair.primary.url("ledger"), database_read_url=nobody, admin_key=ADMIN
    )
    async with app_client(settings) as http:
        account = await create_account(http)
        away_before = reads("primary_standby_away")
        listed = await http.get("/v1/accounts", params={"code": account["code"]})
        assert listed.status_code == 200, listed.text
        assert [a["id"] for a in listed.json()["data"]] == [account["id"]]
        assert reads("primary_standby_away") == away_before + 1


async def test_a_write_that_reaches_a_standby_is_503_and_the_next_connections_look_again(
    pair: ReplicatedPair,
) -> None:
    """A fixed address (a pooler, a VIP) still leading to a server that is now a standby: the
    write is refused as read-only there, which the service answers 503 with Retry-After (no
    primary here), never 500; the pool's connections to it are dropped."""
    settings = Settings(database_url=pair.primary.url("ledger"), admin_key=ADMIN, log_format="json")
    async with app_client(settings) as http:
        account = await create_account(http)
        http_standby = settings.with_(database_url=pair.standby.url("ledger"))
        async with app_client(http_standby) as on_a_standby:
            body = {"code": f"x:{account['id'][:8]}", "currency": "USD", "normal_balance": "credit"}
            refused = await on_a_standby.post("/v1/accounts", json=body)
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"]
            assert refused.json()["code"] == "service_unavailable"
