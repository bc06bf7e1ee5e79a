"""Money movement under real concurrency: many requests at once, through group commit (the
`client` app) and the one-transaction-per-request path (a second app on the same database with
group commit off), against the suite's PostgreSQL. Outcomes are checked on what was stored,
whatever order the requests ran in."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Awaitable
from typing import Any

import httpx
import psycopg

from ledger.core.settings import Settings
from tests.helpers import app_client, balances, create_account, transfer, violations
from tests.test_money_movement import feed, fund

CURRENCIES = ("USD", "EUR", "GBP", "JPY")
CUSTOMERS_PER_CURRENCY = 3
CUSTOMER_FUNDING = 5_000
LIQUIDITY_FUNDING = 4_000
EXCHANGES = 120
CONCURRENCY = 12
IMPORT_LAG_MS = 10


async def gather_bounded(work: list[Awaitable[Any]], limit: int = CONCURRENCY) -> list[Any]:
    """Run everything, at most `limit` requests in flight at once (all really concurrent)."""
    gate = asyncio.Semaphore(limit)

    async def one(item: Awaitable[Any]) -> Any:
        async with gate:
            return await item

    return await asyncio.gather(*(one(w) for w in work))


async def test_exchanges_among_four_currencies_are_both_legs_or_neither(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    """The bank test with exchanges: customers in four currencies exchange at random, in
    parallel with plain transfers, often beyond what a customer or a liquidity account holds.
    Every currency's total is conserved, no floor breaks, every accepted exchange has both legs
    and every refused one neither, and `ledger verify` is clean."""
    rng = random.Random(16)
    customers: dict[str, list[str]] = {}
    liquidity: dict[str, str] = {}
    for currency in CURRENCIES:
        liquidity_account = await create_account(client, currency=currency)
        await fund(client, liquidity_account, LIQUIDITY_FUNDING)
        liquidity[currency] = liquidity_account["id"]
        customers[currency] = []
        for _ in range(CUSTOMERS_PER_CURRENCY):
            customer = await create_account(client, currency=currency)
            await fund(client, customer, CUSTOMER_FUNDING)
            customers[currency].append(customer["id"])
    everyone = {c: [*customers[c], liquidity[c]] for c in CURRENCIES}
    totals_before = {
        c: sum([(await balances(client, a))["posted"] for a in everyone[c]]) for c in CURRENCIES
    }

    async with app_client(settings.with_(group_commit=False)) as plain:

        async def exchange(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[int, Any]:
            response = await http.post("/v1/transfers/exchange", json=body)
            return response.status_code, response.json()

        work: list[Awaitable[Any]] = []
        for index in range(EXCHANGES):
            paying, receiving = rng.sample(CURRENCIES, 2)
            body = {
                "debit_account_id": rng.choice(customers[paying]),
                "credit_account_id": rng.choice(customers[receiving]),
                "debit_amount": rng.randint(1, 1_500),
                "credit_amount": rng.randint(1, 1_500),
                "via": {paying: liquidity[paying], receiving: liquidity[receiving]},
            }
            work.append(exchange(plain if index % 2 else client, body))
            if index % 4 == 0:  # a plain transfer on the same accounts, through group commit
                currency = rng.choice(CURRENCIES)
                a, b = rng.sample(customers[currency], 2)
                work.append(transfer(client, a, b, rng.randint(1, 500)))
        outcomes = await gather_bounded(work)

    exchanges = [o for o in outcomes if isinstance(o, tuple)]
    accepted = [body for status, body in exchanges if status == 201]
    refused = [body for status, body in exchanges if status != 201]
    assert accepted and refused, "the mix should both accept and refuse exchanges"
    assert {b["code"] for b in refused} <= {"insufficient_funds"}, refused[:3]
    for body in accepted:
        debit_leg, credit_leg = body["transfers"]
        assert debit_leg["currency"] != credit_leg["currency"]
        assert debit_leg["state"] == credit_leg["state"] == "posted"

    # both legs or neither: every leg stored belongs to an accepted exchange, two per exchange
    legs = sync_db.execute(
        "SELECT count(*) FROM transfers t WHERE t.debit_account_id = ANY(%s::uuid[])"
        " OR t.credit_account_id = ANY(%s::uuid[])",
        (list(liquidity.values()), list(liquidity.values())),
    ).fetchone()
    stored = sync_db.execute("SELECT count(*) FROM exchanges").fetchone()
    assert legs is not None and stored is not None
    # the liquidity accounts' own funding transfers count once each
    assert legs[0] - len(CURRENCIES) == 2 * len(accepted) == 2 * stored[0]

    for currency in CURRENCIES:
        after = [await balances(client, a) for a in everyone[currency]]
        assert sum(b["posted"] for b in after) == totals_before[currency], currency
        assert min(b["available"] for b in after) >= 0, currency
    assert await violations(settings) == []


async def test_racing_balancing_transfers_never_move_more_than_was_there(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    available = 1_000
    a = await create_account(client)
    b = await create_account(client)
    await fund(client, a, available)
    async with app_client(settings.with_(group_commit=False)) as plain:
        work: list[Awaitable[Any]] = []
        for index in range(30):
            http = plain if index % 3 == 0 else client
            work.append(transfer(http, a["id"], b["id"], 130, balancing=True))
        work.append(
            client.post(
                "/v1/transfers/batch",
                json={
                    "atomic": False,
                    "transfers": [
                        {
                            "debit_account_id": a["id"],
                            "credit_account_id": b["id"],
                            "amount": 90,
                            "balancing": True,
                        }
                    ]
                    * 5,
                },
            )
        )
        responses = await gather_bounded(work)
    moved = 0
    codes = []
    for response in responses:
        items = (
            [(r["status"], r.get("transfer") or r.get("error")) for r in response.json()["results"]]
            if "results" in response.json()
            else [(response.status_code, response.json())]
        )
        for status, body in items:
            if status == 201:
                assert 1 <= body["amount"] <= 130
                moved += body["amount"]
            else:
                codes.append(body["code"])
    assert moved == available
    assert codes and set(codes) == {"nothing_to_move"}
    assert (await balances(client, a["id"]))["available"] == 0
    assert (await balances(client, b["id"]))["posted"] == available
    assert await violations(settings) == []


async def test_imported_and_live_transfers_interleaved_keep_time_in_order(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """Imports stamped "now" as they are sent race live transfers on the same accounts: each
    import either lands after every entry before it or is refused `imported_out_of_order`, and
    per account `posted_at` never decreases as the sequence grows."""
    source = await create_account(client, normal_balance="debit", min_balance=None)
    a = await create_account(client)
    b = await create_account(client)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    for account in (a, b):
        first = await transfer(
            client, source["id"], account["id"], 5_000, imported_at=start.isoformat()
        )
        assert first.status_code == 201, first.text

    async def importer() -> list[int]:
        statuses = []
        for _ in range(25):
            # a little in the past: a live transfer committed meanwhile makes it out of order
            at = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=IMPORT_LAG_MS)
            response = await transfer(client, a["id"], b["id"], 1, imported_at=at.isoformat())
            assert response.status_code in (201, 422), response.text
            if response.status_code == 422:
                assert response.json()["code"] == "imported_out_of_order"
            statuses.append(response.status_code)
        return statuses

    async def live() -> None:
        for _ in range(25):
            response = await transfer(client, b["id"], a["id"], 1)
            assert response.status_code in (201, 422), response.text

    results = await asyncio.gather(importer(), importer(), live(), live())
    assert 201 in results[0] + results[1]
    for account in (a, b):
        statement = (
            await client.get(f"/v1/accounts/{account['id']}/entries", params={"limit": 1000})
        ).json()["data"]
        times = [dt.datetime.fromisoformat(e["posted_at"]) for e in statement]
        sequences = [e["sequence"] for e in statement]
        assert sequences == sorted(sequences)
        assert times == sorted(times), account["id"]
    assert await violations(settings) == []


def crossings(statement: list[dict[str, Any]], threshold: int) -> list[int]:
    """The sequences of the entries after which `posted < threshold` became true."""
    found = []
    before = 0
    for entry in statement:
        after = entry["balance_after"]
        if not before < threshold and after < threshold:
            found.append(entry["sequence"])
        before = after
    return found


async def test_a_monitor_fires_once_per_crossing_under_concurrent_transfers(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    threshold = 3_000
    a = await create_account(client)
    b = await create_account(client)
    await fund(client, a, 4_000)
    await fund(client, b, 4_000)
    monitor = (
        await client.post(
            f"/v1/accounts/{a['id']}/monitors",
            json={"field": "posted", "operator": "lt", "value": threshold},
        )
    ).json()
    rng = random.Random(7)
    async with app_client(settings.with_(group_commit=False)) as plain:
        work: list[Awaitable[Any]] = []
        for index in range(80):
            http = plain if index % 4 == 0 else client
            if rng.random() < 0.5:
                work.append(transfer(http, a["id"], b["id"], rng.randint(100, 600)))
            else:
                work.append(transfer(http, b["id"], a["id"], rng.randint(100, 600)))
        await gather_bounded(work, limit=16)

    statement = (
        await client.get(f"/v1/accounts/{a['id']}/entries", params={"limit": 1000})
    ).json()["data"]
    expected = crossings(statement, threshold)
    assert len(expected) >= 2, "the run should cross the threshold more than once"
    fired = [
        e
        for e in await feed(settings)
        if e["type"] == "ledger.account.monitor_triggered" and e["subject"] == monitor["id"]
    ]
    # one event per crossing, numbered 1, 2, 3, ... with no gap, each after its crossing entry
    assert [int(e["sequence"]) for e in fired] == list(range(1, len(expected) + 1))
    assert [e["data"]["version"] for e in fired] == expected
    assert all(e["data"]["balances"]["posted"] < threshold for e in fired)
    listed = (await client.get(f"/v1/accounts/{a['id']}/monitors")).json()["data"]
    assert listed[0]["trigger_count"] == len(expected)
    assert await violations(settings) == []
