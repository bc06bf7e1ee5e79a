"""Idempotency-Key on every POST, and client transfer ids: concurrent duplicates make one
effect, replays are byte for byte, reuse with another body is refused, failures leave no key."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from ledger.core import limits
from ledger.core.settings import Settings
from tests.helpers import app_client, balances, funded_pair, transfer
from tests.test_errors import problem

RACERS = 24
ACCOUNT = {"code": "slow", "currency": "USD", "normal_balance": "credit"}


def transfer_count(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM transfers").fetchone()
    assert row is not None
    return int(row[0])


def check_one_effect(responses: list[httpx.Response], status: int) -> httpx.Response:
    """Every answer is the first one replayed byte for byte, or 409 idempotency_key_in_use."""
    answered = [r for r in responses if r.status_code != 409]
    for r in responses:
        if r.status_code == 409:
            assert problem(r) == (409, "idempotency_key_in_use"), r.text
    originals = [r for r in answered if r.headers.get("idempotent-replayed") != "true"]
    assert len(originals) == 1, [r.text for r in originals]
    original = originals[0]
    assert original.status_code == status, original.text
    for r in answered:
        assert (r.status_code, r.content) == (original.status_code, original.content)
        assert r.headers["content-type"] == original.headers["content-type"]
    return original


async def test_concurrent_transfers_with_one_key_make_one_effect(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 1000)
    before = transfer_count(sync_db)
    body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 7}
    responses = await asyncio.gather(
        *(
            client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "pay-7"})
            for _ in range(RACERS)
        )
    )
    original = check_one_effect(list(responses), 201)
    assert transfer_count(sync_db) == before + 1
    assert (await balances(client, a["id"]))["posted"] == 993
    replay = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "pay-7"})
    assert replay.headers["idempotent-replayed"] == "true"
    assert (replay.status_code, replay.content) == (201, original.content)


async def test_concurrent_account_creates_with_one_key_make_one_account(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    body = {"code": "one-of-many", "currency": "USD", "normal_balance": "credit"}
    responses = await asyncio.gather(
        *(
            client.post("/v1/accounts", json=body, headers={"Idempotency-Key": "acct-1"})
            for _ in range(RACERS)
        )
    )
    check_one_effect(list(responses), 201)
    row = sync_db.execute("SELECT count(*) FROM accounts WHERE code = 'one-of-many'").fetchone()
    assert row is not None and row[0] == 1


async def test_concurrent_batches_and_reversals_with_one_key(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 1000)
    batch = {
        "atomic": True,
        "transfers": [
            {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 10},
            {"debit_account_id": b["id"], "credit_account_id": a["id"], "amount": 3},
        ],
    }
    responses = await asyncio.gather(
        *(
            client.post("/v1/transfers/batch", json=batch, headers={"Idempotency-Key": "b-1"})
            for _ in range(RACERS)
        )
    )
    original = check_one_effect(list(responses), 200)
    assert [r["status"] for r in original.json()["results"]] == [201, 201]
    assert (await balances(client, a["id"]))["posted"] == 993
    transfer_id = original.json()["results"][0]["transfer"]["id"]
    url = f"/v1/transfers/{transfer_id}/reverse"
    responses = await asyncio.gather(
        *(
            client.post(url, json={"amount": 2}, headers={"Idempotency-Key": "rev-1"})
            for _ in range(RACERS)
        )
    )
    check_one_effect(list(responses), 201)
    assert (await balances(client, a["id"]))["posted"] == 995
    stored = (await client.get(f"/v1/transfers/{transfer_id}")).json()
    assert stored["posted_amount"] == 10


async def test_concurrent_creates_with_one_transfer_id_make_one_transfer(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 1000)
    before = transfer_count(sync_db)
    transfer_id = str(uuid.uuid4())
    responses = await asyncio.gather(
        *(transfer(client, a["id"], b["id"], 11, id=transfer_id) for _ in range(RACERS))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (RACERS - 1) + [201], [r.text for r in responses]
    assert len({r.content for r in responses}) == 1
    assert transfer_count(sync_db) == before + 1
    assert (await balances(client, a["id"]))["posted"] == 989


async def test_replays_are_byte_for_byte_and_flagged(client: httpx.AsyncClient) -> None:
    _source, a, b = await funded_pair(client, 100)
    body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 5}
    first = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    # the same JSON, other spacing and key order: the same request
    reordered = (
        f'{{ "amount": 5, "credit_account_id": "{b["id"]}",  "debit_account_id": "{a["id"]}" }}'
    )
    again = await client.post(
        "/v1/transfers",
        content=reordered.encode(),
        headers={"Idempotency-Key": "k1", "content-type": "application/json"},
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert (await balances(client, a["id"]))["posted"] == 95
    # refusals are stored and replayed too, even once the refusal no longer holds
    big = {**body, "amount": 500}
    refused = await client.post("/v1/transfers", json=big, headers={"Idempotency-Key": "k2"})
    assert problem(refused) == (422, "insufficient_funds")
    assert (await transfer(client, _source["id"], a["id"], 1000)).status_code == 201
    replayed = await client.post("/v1/transfers", json=big, headers={"Idempotency-Key": "k2"})
    assert replayed.headers["idempotent-replayed"] == "true"
    assert (replayed.status_code, replayed.content) == (422, refused.content)
    assert replayed.headers["content-type"].startswith("application/problem+json")


async def test_a_key_reused_with_another_request_is_refused(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 100)
    body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 5}
    assert (
        await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "k"})
    ).status_code == 201
    before = transfer_count(sync_db)
    for path, other in (
        ("/v1/transfers", {**body, "amount": 6}),
        ("/v1/transfers", {**body, "reference": "x"}),
        ("/v1/accounts", {"code": "k", "currency": "USD", "normal_balance": "debit"}),
    ):
        response = await client.post(path, json=other, headers={"Idempotency-Key": "k"})
        assert problem(response) == (422, "idempotency_key_reused"), path
    assert transfer_count(sync_db) == before


async def test_keys_are_scoped_to_the_api_key(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 100)
    operator = (await client.post("/v1/api-keys", json={"name": "op", "role": "operator"})).json()
    body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 5}
    mine = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "shared"})
    theirs = await client.post(
        "/v1/transfers",
        json=body,
        headers={"Idempotency-Key": "shared", "Authorization": f"Bearer {operator['secret']}"},
    )
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]
    assert (await balances(client, a["id"]))["posted"] == 90


async def test_keys_live_at_least_a_day(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 100)
    body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 5}
    first = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "old"})
    sync_db.execute(
        "UPDATE idempotency_keys SET created_at = created_at - interval '25 hours'"
        " WHERE key = 'old'"
    )
    again = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "old"})
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert (await balances(client, a["id"]))["posted"] == 95


@pytest.fixture
def short_lock_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines made while this is active give up on a lock after 300 ms instead of seconds."""
    monkeypatch.setattr(limits, "DB_LOCK_TIMEOUT_MS", 300)


async def test_a_failed_first_request_leaves_no_key_behind(
    client: httpx.AsyncClient,
    settings: Settings,
    short_lock_timeout: None,
    sync_db: psycopg.Connection[Any],
) -> None:
    _source, a, b = await funded_pair(client, 100)
    body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 5}
    async with app_client(settings) as impatient:
        with psycopg.connect(settings.database_url or "") as holder:
            # another transaction holds the account row: the first request times out (503)
            holder.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (a["id"],))
            failed = await impatient.post(
                "/v1/transfers", json=body, headers={"Idempotency-Key": "retry-me"}
            )
            assert problem(failed) == (503, "service_unavailable"), failed.text
            assert "retry-after" in failed.headers
            holder.rollback()
        row = sync_db.execute("SELECT count(*) FROM idempotency_keys").fetchone()
        assert row is not None and row[0] == 0
        retried = await impatient.post(
            "/v1/transfers", json=body, headers={"Idempotency-Key": "retry-me"}
        )
        assert retried.status_code == 201, retried.text
        assert "idempotent-replayed" not in retried.headers
    assert (await balances(client, a["id"]))["posted"] == 95


@pytest.mark.parametrize("group_commit", [True, False])
async def test_a_key_still_running_past_the_lock_timeout_is_409_in_use(
    client: httpx.AsyncClient, settings: Settings, short_lock_timeout: None, group_commit: bool
) -> None:
    """Accounts take the one-request path; transfers the shared (group commit) one or not."""
    admin_id = (await client.get("/v1/api-keys")).json()["data"][0]["id"]
    _source, a, b = await funded_pair(client, 100)
    payment = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 5}
    async with app_client(settings.with_(group_commit=group_commit)) as impatient:
        with psycopg.connect(settings.database_url or "") as first:
            # a first request with this key that has not committed yet
            first.execute(
                "INSERT INTO idempotency_keys (principal_id, key, fingerprint, created_at)"
                " VALUES (%s, 'busy', 'f', %s)",
                (admin_id, dt.datetime.now(dt.UTC)),
            )
            for path, body in (("/v1/accounts", ACCOUNT), ("/v1/transfers", payment)):
                second = await impatient.post(path, json=body, headers={"Idempotency-Key": "busy"})
                assert problem(second) == (409, "idempotency_key_in_use"), (path, second.text)
            # a request without a key is not held back by the busy one
            unkeyed = await impatient.post("/v1/transfers", json=payment)
            assert unkeyed.status_code == 201, unkeyed.text
            first.rollback()
        # the first never committed: the key is free again and the request runs once
        third = await impatient.post(
            "/v1/transfers", json=payment, headers={"Idempotency-Key": "busy"}
        )
        assert third.status_code == 201, third.text
    assert (await balances(client, a["id"]))["posted"] == 90
