"""Money movement over HTTP, one feature at a time: exchanges, balancing transfers, imported
transfers and the period lock, balance monitors; each with its refusals."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from ledger.core.settings import Settings
from outbox.relay import Relay
from tests.helpers import app_client, balances, create_account, transfer, violations


async def fund(client: httpx.AsyncClient, account: dict[str, Any], amount: int) -> None:
    source = await create_account(
        client, normal_balance="debit", currency=account["currency"], min_balance=None
    )
    response = await transfer(client, source["id"], account["id"], amount)
    assert response.status_code == 201, response.text


async def exchange_setup(client: httpx.AsyncClient) -> dict[str, Any]:
    """A USD customer with 10,000, a EUR customer, and a liquidity account per currency (the
    EUR one able to pay out: no floor)."""
    usd = await create_account(client, currency="USD")
    eur = await create_account(client, currency="EUR")
    liq_usd = await create_account(client, currency="USD", min_balance=None)
    liq_eur = await create_account(client, currency="EUR", min_balance=None)
    await fund(client, usd, 10_000)
    return {"usd": usd, "eur": eur, "liq_usd": liq_usd, "liq_eur": liq_eur}


def exchange_body(s: dict[str, Any], debit_amount: int, credit_amount: int, **extra: Any) -> Any:
    return {
        "debit_account_id": s["usd"]["id"],
        "credit_account_id": s["eur"]["id"],
        "debit_amount": debit_amount,
        "credit_amount": credit_amount,
        "via": {"USD": s["liq_usd"]["id"], "EUR": s["liq_eur"]["id"]},
        **extra,
    }


async def test_exchange_posts_both_legs_with_the_rate(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    s = await exchange_setup(client)
    exchange_id = str(uuid.uuid4())
    body = exchange_body(s, 1_000, 920, id=exchange_id, reference="fx-1")
    response = await client.post("/v1/transfers/exchange", json=body)
    assert response.status_code == 201, response.text
    out = response.json()
    assert out["id"] == exchange_id and out["rate"] == "0.92"
    debit_leg, credit_leg = out["transfers"]
    assert (debit_leg["currency"], debit_leg["amount"]) == ("USD", 1_000)
    assert (credit_leg["currency"], credit_leg["amount"]) == ("EUR", 920)
    assert debit_leg["credit_account_id"] == s["liq_usd"]["id"]
    assert credit_leg["debit_account_id"] == s["liq_eur"]["id"]
    assert (await balances(client, s["usd"]["id"]))["posted"] == 9_000
    assert (await balances(client, s["eur"]["id"]))["posted"] == 920
    # the same id again is the same exchange; other fields are a conflict, and nothing moves
    again = await client.post("/v1/transfers/exchange", json=body)
    assert again.status_code == 200 and again.json() == out
    other = await client.post("/v1/transfers/exchange", json={**body, "credit_amount": 921})
    assert other.status_code == 409
    assert other.json()["code"] == "exchange_exists_with_different_fields"
    assert (await balances(client, s["usd"]["id"]))["posted"] == 9_000
    # without an id, an Idempotency-Key makes a retry a replay of the first answer
    keyed = exchange_body(s, 500, 460)
    headers = {"Idempotency-Key": "fx-retry-1"}
    first = await client.post("/v1/transfers/exchange", json=keyed, headers=headers)
    retry = await client.post("/v1/transfers/exchange", json=keyed, headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true" and retry.content == first.content
    assert (await balances(client, s["usd"]["id"]))["posted"] == 8_500
    assert await violations(settings) == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"via": "usd_only"}, "exchange_via_invalid"),
        ({"via": "swapped"}, "currency_mismatch"),
        ({"debit_amount": 10_001}, "insufficient_funds"),
        ({"credit_account": "usd"}, "exchange_same_currency"),
    ],
)
async def test_exchange_refusals_move_nothing(
    client: httpx.AsyncClient, change: dict[str, Any], code: str
) -> None:
    s = await exchange_setup(client)
    body = exchange_body(s, 1_000, 920)
    if change.get("via") == "usd_only":
        body["via"] = {"USD": s["liq_usd"]["id"], "GBP": s["liq_eur"]["id"]}
    elif change.get("via") == "swapped":
        body["via"] = {"USD": s["liq_eur"]["id"], "EUR": s["liq_usd"]["id"]}
    elif "debit_amount" in change:
        body["debit_amount"] = change["debit_amount"]
    else:
        other = await create_account(client, currency="USD")
        body["credit_account_id"] = other["id"]
    response = await client.post("/v1/transfers/exchange", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    assert (await balances(client, s["usd"]["id"]))["posted"] == 10_000
    assert (await balances(client, s["liq_eur"]["id"]))["posted"] == 0


@pytest.mark.parametrize(
    ("debit", "credit", "rate"),
    [
        (1_000, 920, "0.92"),
        (8, 10, "1.25"),
        (100, 100, "1"),
        (1, 2**63 - 1, str(2**63 - 1)),
        # terminating, however long: 1 / 2**62 has 62 decimals and 44 significant digits
        (2**62, 1, "0.00000000000000000021684043449710088680149056017398834228515625"),
        # not terminating: rounded half-even to 64 significant digits
        (3, 2, "0.6666666666666666666666666666666666666666666666666666666666666667"),
    ],
)
def test_exchange_rate_is_an_exact_decimal_string(debit: int, credit: int, rate: str) -> None:
    from transfers.exchange import exchange_rate

    assert exchange_rate(debit, credit) == rate


async def test_balancing_transfer_moves_what_is_available(client: httpx.AsyncClient) -> None:
    a = await create_account(client)
    b = await create_account(client)
    await fund(client, a, 700)
    response = await transfer(client, a["id"], b["id"], 1_000, balancing=True)
    assert response.status_code == 201, response.text
    assert response.json()["amount"] == 700 and response.json()["posted_amount"] == 700
    assert (await balances(client, a["id"]))["available"] == 0
    empty = await transfer(client, a["id"], b["id"], 1_000, balancing=True)
    assert empty.status_code == 422 and empty.json()["code"] == "nothing_to_move"
    # under the ceiling, it moves the ceiling
    await fund(client, a, 500)
    capped = await transfer(client, a["id"], b["id"], 200, balancing=True)
    assert capped.status_code == 201 and capped.json()["amount"] == 200


async def test_imported_transfer_is_posted_at_its_time(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    source = await create_account(client, normal_balance="debit", min_balance=None)
    a = await create_account(client)
    first = "2020-01-01T00:00:00Z"
    response = await transfer(client, source["id"], a["id"], 100, imported_at=first)
    assert response.status_code == 201, response.text
    assert response.json()["imported_at"] == first
    # the audit record keeps both times: when it happened, and when it was written
    [record] = (await client.get("/v1/audit", params={"object_id": response.json()["id"]})).json()[
        "data"
    ]
    assert record["data"]["request"]["imported_at"] == first
    assert record["data"]["result"]["imported_at"] == first
    written = dt.datetime.fromisoformat(record["at"])
    assert written > dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    # its event carries the import time in its data; the envelope's time is the write's
    [posted] = [
        e
        for e in await feed(settings)
        if e["type"] == "ledger.transfer.posted" and e["subject"] == response.json()["id"]
    ]
    assert posted["data"]["imported_at"] == first
    assert dt.datetime.fromisoformat(posted["time"]) > dt.datetime.fromisoformat(first)
    statement = (await client.get(f"/v1/accounts/{a['id']}/entries")).json()["data"]
    assert statement[0]["posted_at"] == first
    as_of = await client.get(
        f"/v1/accounts/{a['id']}/balance", params={"as_of": "2020-06-01T00:00:00Z"}
    )
    assert as_of.json()["posted"] == 100
    before = await client.get(
        f"/v1/accounts/{a['id']}/balance", params={"as_of": "2019-12-31T00:00:00Z"}
    )
    assert before.json()["posted"] == 0
    older = await transfer(client, source["id"], a["id"], 1, imported_at="2019-01-01T00:00:00Z")
    assert older.status_code == 422 and older.json()["code"] == "imported_out_of_order"
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    ahead = await transfer(client, source["id"], a["id"], 1, imported_at=future)
    assert ahead.status_code == 422 and ahead.json()["code"] == "imported_in_future"
    pending = await transfer(client, source["id"], a["id"], 1, imported_at=first, pending=True)
    assert pending.status_code == 422 and pending.json()["code"] == "validation_error"
    assert await violations(settings) == []


async def test_imported_transfers_are_for_admins_only(client: httpx.AsyncClient) -> None:
    key = await client.post("/v1/api-keys", json={"name": "ops", "role": "operator"})
    secret = key.json()["secret"]
    source = await create_account(client, normal_balance="debit", min_balance=None)
    a = await create_account(client)
    response = await client.post(
        "/v1/transfers",
        headers={"Authorization": f"Bearer {secret}"},
        json={
            "debit_account_id": source["id"],
            "credit_account_id": a["id"],
            "amount": 5,
            "imported_at": "2020-01-01T00:00:00Z",
        },
    )
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert (await balances(client, a["id"]))["posted"] == 0


async def test_period_lock_moves_forward_and_refuses_posting_inside(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    assert (await client.get("/v1/settings/period-lock")).json()["locked_until"] is None
    source = await create_account(client, normal_balance="debit", min_balance=None)
    a = await create_account(client)
    lock = "2021-01-01T00:00:00Z"
    put = await client.put("/v1/settings/period-lock", json={"locked_until": lock})
    assert put.status_code == 200, put.text
    assert put.json()["locked_until"] == lock
    inside = await transfer(client, source["id"], a["id"], 5, imported_at="2020-12-31T23:00:00Z")
    assert inside.status_code == 422 and inside.json()["code"] == "period_locked"
    at = await transfer(client, source["id"], a["id"], 5, imported_at=lock)
    assert at.status_code == 422 and at.json()["code"] == "period_locked"
    after = await transfer(client, source["id"], a["id"], 5, imported_at="2021-01-01T00:00:01Z")
    assert after.status_code == 201, after.text
    back = await client.put(
        "/v1/settings/period-lock", json={"locked_until": "2020-01-01T00:00:00Z"}
    )
    assert back.status_code == 409 and back.json()["code"] == "period_lock_backwards"
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    ahead = await client.put("/v1/settings/period-lock", json={"locked_until": future})
    assert ahead.status_code == 422 and ahead.json()["code"] == "period_lock_in_future"
    audit = await client.get("/v1/audit", params={"action": "period_lock.set"})
    assert [r["data"]["request"]["locked_until"] for r in audit.json()["data"]] == [lock]
    # the database refuses an entry inside the period, whatever wrote it
    with pytest.raises(psycopg.errors.CheckViolation):
        write_behind_the_service(sync_db, source["id"], a["id"], "2020-06-01T00:00:00Z")
    with pytest.raises(psycopg.errors.CheckViolation):
        sync_db.execute("INSERT INTO period_locks VALUES ('2000-01-01T00:00:00Z', 0, now())")


def write_behind_the_service(
    db: psycopg.Connection[Any], debit: str, credit: str, posted_at: str
) -> None:
    """A balanced transfer and its two entries, written in SQL (no service code involved)."""
    with db.transaction():
        row = db.execute(
            "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency,"
            " state, posted_amount, reversed_amount, metadata, metadata_text, created_at,"
            " updated_at, created_pending) VALUES (gen_random_uuid(), %s, %s, 1, 'USD',"
            " 'posted', 1, 0, '{}', '{}', now(), now(), false) RETURNING id",
            (debit, credit),
        ).fetchone()
        assert row is not None
        db.execute(
            "INSERT INTO entries (account_id, transfer_id, direction, amount, balance_after,"
            " sequence, posted_at) VALUES (%s, %s, 'debit', 1, 0, 1000, %s),"
            " (%s, %s, 'credit', 1, 0, 1000, %s)",
            (debit, row[0], posted_at, credit, row[0], posted_at),
        )


async def test_period_lock_is_admin_only(client: httpx.AsyncClient) -> None:
    key = await client.post("/v1/api-keys", json={"name": "ops", "role": "operator"})
    response = await client.put(
        "/v1/settings/period-lock",
        headers={"Authorization": f"Bearer {key.json()['secret']}"},
        json={"locked_until": "2020-01-01T00:00:00Z"},
    )
    assert response.status_code == 403
    assert (await client.get("/v1/settings/period-lock")).json()["locked_until"] is None


async def feed(settings: Settings) -> list[dict[str, Any]]:
    """Every event in the HTTP feed's order, once a relay (no Kafka) has handed out positions."""
    relay = Relay(settings)
    try:
        for _ in range(1_000):
            if not await relay.step():
                break
    finally:
        await relay.close()
    async with app_client(settings) as client:
        events: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["after"] = cursor
            page = (await client.get("/v1/events", params=params)).json()
            events.extend(page["data"])
            cursor = page["next_cursor"]
            if not cursor:
                return events


async def test_monitor_fires_once_per_crossing(
    client: httpx.AsyncClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    a = await create_account(client)
    b = await create_account(client)
    await fund(client, a, 1_000)
    created = await client.post(
        f"/v1/accounts/{a['id']}/monitors",
        json={"field": "available", "operator": "lt", "value": 500},
    )
    assert created.status_code == 201, created.text
    monitor = created.json()
    for _ in range(3):  # 700, 400 (crosses), 100 (stays below)
        assert (await transfer(client, a["id"], b["id"], 300)).status_code == 201
    assert (await transfer(client, b["id"], a["id"], 600)).status_code == 201  # back to 700
    assert (await transfer(client, a["id"], b["id"], 300)).status_code == 201  # 400: again
    events = await feed(settings)
    fired = [e for e in events if e["type"] == "ledger.account.monitor_triggered"]
    assert [e["subject"] for e in fired] == [monitor["id"]] * 2
    assert [e["sequence"] for e in fired] == [f"{1:020d}", f"{2:020d}"]
    assert [e["data"]["balances"]["available"] for e in fired] == [400, 400]
    logged = [
        r.msg
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg.get("event") == "monitor.triggered"
    ]
    assert [m["monitor_id"] for m in logged] == [monitor["id"]] * 2
    listed = (await client.get(f"/v1/accounts/{a['id']}/monitors")).json()["data"]
    assert [m["trigger_count"] for m in listed] == [2]
    gone = await client.delete(f"/v1/accounts/{a['id']}/monitors/{monitor['id']}")
    assert gone.status_code == 200
    again = await client.delete(f"/v1/accounts/{a['id']}/monitors/{monitor['id']}")
    assert again.status_code == 404 and again.json()["code"] == "monitor_not_found"
    bad = await client.post(
        f"/v1/accounts/{a['id']}/monitors", json={"field": "posted", "operator": "eq", "value": 1}
    )
    assert bad.status_code == 422
    missing = await client.post(
        f"/v1/accounts/{uuid.uuid4()}/monitors",
        json={"field": "posted", "operator": "lt", "value": 1},
    )
    assert missing.status_code == 404


async def test_verify_finds_what_the_triggers_were_switched_off_for(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    """A superuser with the triggers off (replica role) posts inside the locked period and
    records an exchange of two same-currency transfers: `ledger verify` names both."""
    source = await create_account(client, normal_balance="debit", min_balance=None)
    a = await create_account(client)
    first = await transfer(client, source["id"], a["id"], 5)
    second = await transfer(client, source["id"], a["id"], 7)
    put = await client.put(
        "/v1/settings/period-lock", json={"locked_until": "2022-01-01T00:00:00Z"}
    )
    assert put.status_code == 200
    assert await violations(settings) == []
    sync_db.execute("SET session_replication_role = replica")
    write_behind_the_service(sync_db, source["id"], a["id"], "2021-06-01T00:00:00Z")
    sync_db.execute(
        "INSERT INTO exchanges VALUES (gen_random_uuid(), %s, %s, '1.4', now())",
        (first.json()["id"], second.json()["id"]),
    )
    sync_db.execute("SET session_replication_role = DEFAULT")
    found = await violations(settings)
    assert any(line.startswith("entry posted inside the locked period") for line in found)
    assert any(line.startswith("exchange without both of its legs") for line in found)
