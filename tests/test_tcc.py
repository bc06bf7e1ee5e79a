"""Two-phase transfers (try / confirm / cancel) over HTTP against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from litestar.testing import AsyncTestClient

from ledger.core.db import create_engine, create_sessionmaker
from ledger.core.settings import Settings
from ledger.worker.jobs import expire_step
from tests.helpers import balances, funded_pair, transfer, violations


async def test_hold_moves_pending_and_available(client: AsyncTestClient[Any]) -> None:
    _, a, b = await funded_pair(client, 1000)
    response = await transfer(client, a["id"], b["id"], 400, pending=True)
    assert response.status_code == 201, response.text
    held = response.json()
    assert held["state"] == "pending" and held["posted_amount"] == 0
    assert await balances(client, a["id"]) == {
        "posted": 1000,
        "available": 600,
        "posted_debits": 0,
        "posted_credits": 1000,
        "pending_debits": 400,
        "pending_credits": 0,
    }
    credit_side = await balances(client, b["id"])
    assert credit_side["pending_credits"] == 400 and credit_side["posted"] == 0
    # the hold counts against the floor: 600 left, 601 is refused
    refused = await transfer(client, a["id"], b["id"], 601)
    assert refused.status_code == 422 and refused.json()["code"] == "insufficient_funds"
    refused_hold = await transfer(client, a["id"], b["id"], 601, pending=True)
    assert refused_hold.json()["code"] == "insufficient_funds"
    listed = await client.get("/v1/transfers", params={"state": "pending"})
    assert [t["id"] for t in listed.json()["data"]] == [held["id"]]
    statement = await client.get(f"/v1/accounts/{a['id']}/entries")
    assert len(statement.json()["data"]) == 1  # only the funding, never the hold


async def test_post_in_full_and_repeat(client: AsyncTestClient[Any]) -> None:
    _, a, b = await funded_pair(client, 1000)
    held = (await transfer(client, a["id"], b["id"], 400, pending=True)).json()
    first = await client.post(f"/v1/transfers/{held['id']}/post")
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "posted" and first.json()["posted_amount"] == 400
    again = await client.post(f"/v1/transfers/{held['id']}/post")
    assert again.status_code == 200 and again.json() == first.json()
    assert (await balances(client, a["id"]))["available"] == 600
    assert (await balances(client, a["id"]))["pending_debits"] == 0
    assert (await balances(client, b["id"]))["posted"] == 400
    voided = await client.post(f"/v1/transfers/{held['id']}/void")
    assert voided.status_code == 409 and voided.json()["code"] == "transfer_not_pending"


async def test_partial_post_releases_the_rest(client: AsyncTestClient[Any]) -> None:
    _, a, b = await funded_pair(client, 1000)
    held = (await transfer(client, a["id"], b["id"], 400, pending=True)).json()
    too_much = await client.post(f"/v1/transfers/{held['id']}/post", json={"amount": 401})
    assert too_much.status_code == 422 and too_much.json()["code"] == "post_exceeds_pending"
    posted = await client.post(f"/v1/transfers/{held['id']}/post", json={"amount": 150})
    assert posted.status_code == 200 and posted.json()["posted_amount"] == 150
    a_bal = await balances(client, a["id"])
    assert a_bal["posted"] == 850 and a_bal["available"] == 850 and a_bal["pending_debits"] == 0
    assert (await balances(client, b["id"]))["pending_credits"] == 0
    different = await client.post(f"/v1/transfers/{held['id']}/post", json={"amount": 100})
    assert different.status_code == 409 and different.json()["code"] == "transfer_not_pending"
    statement = (await client.get(f"/v1/accounts/{a['id']}/entries")).json()["data"]
    assert [e["amount"] for e in statement] == [1000, 150]
    assert statement[-1]["balance_after"] == 850


async def test_void_releases_and_repeats(client: AsyncTestClient[Any]) -> None:
    _, a, b = await funded_pair(client, 1000)
    held = (await transfer(client, a["id"], b["id"], 400, pending=True)).json()
    voided = await client.post(f"/v1/transfers/{held['id']}/void")
    assert voided.status_code == 200 and voided.json()["state"] == "voided"
    again = await client.post(f"/v1/transfers/{held['id']}/void")
    assert again.status_code == 200 and again.json() == voided.json()
    assert (await balances(client, a["id"]))["available"] == 1000
    assert (await balances(client, b["id"]))["pending_credits"] == 0
    post = await client.post(f"/v1/transfers/{held['id']}/post")
    assert post.status_code == 409 and post.json()["code"] == "transfer_not_pending"
    reverse = await client.post(f"/v1/transfers/{held['id']}/reverse")
    assert reverse.status_code == 422 and reverse.json()["code"] == "transfer_not_posted"


async def test_empty_cancel_then_suspension_is_refused(client: AsyncTestClient[Any]) -> None:
    _, a, b = await funded_pair(client, 1000)
    transfer_id = str(uuid.uuid4())
    cancel = await client.post(f"/v1/transfers/{transfer_id}/void")
    assert cancel.status_code == 200, cancel.text
    body = cancel.json()
    assert body["id"] == transfer_id and body["state"] == "voided" and body["amount"] == 0
    assert (await client.post(f"/v1/transfers/{transfer_id}/void")).json() == body
    late = await transfer(client, a["id"], b["id"], 100, pending=True, id=transfer_id)
    assert late.status_code == 409 and late.json()["code"] == "transfer_already_voided"
    late_posted = await transfer(client, a["id"], b["id"], 100, id=transfer_id)
    assert late_posted.json()["code"] == "transfer_already_voided"
    assert await balances(client, a["id"]) == {
        "posted": 1000,
        "available": 1000,
        "posted_debits": 0,
        "posted_credits": 1000,
        "pending_debits": 0,
        "pending_credits": 0,
    }
    post = await client.post(f"/v1/transfers/{transfer_id}/post")
    assert post.status_code == 409 and post.json()["code"] == "transfer_not_pending"
    unknown = await client.post(f"/v1/transfers/{uuid.uuid4()}/post")
    assert unknown.status_code == 404 and unknown.json()["code"] == "transfer_not_found"


async def test_retry_after_lost_response_gets_same_answer(client: AsyncTestClient[Any]) -> None:
    _, a, b = await funded_pair(client, 1000)
    held = (await transfer(client, a["id"], b["id"], 300, pending=True)).json()
    headers = {"Idempotency-Key": f"confirm-{held['id']}"}
    first = await client.post(
        f"/v1/transfers/{held['id']}/post", json={"amount": 200}, headers=headers
    )
    second = await client.post(
        f"/v1/transfers/{held['id']}/post", json={"amount": 200}, headers=headers
    )
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert second.headers.get("idempotent-replayed") == "true"
    assert (await balances(client, b["id"]))["posted"] == 200


async def test_frozen_account_still_settles_pending(client: AsyncTestClient[Any]) -> None:
    _, a, b = await funded_pair(client, 1000)
    first = (await transfer(client, a["id"], b["id"], 100, pending=True)).json()
    second = (await transfer(client, a["id"], b["id"], 100, pending=True)).json()
    account = await client.get(f"/v1/accounts/{a['id']}")
    frozen = await client.patch(
        f"/v1/accounts/{a['id']}",
        json={"status": "frozen"},
        headers={"If-Match": account.headers["etag"]},
    )
    assert frozen.status_code == 200, frozen.text
    new_hold = await transfer(client, a["id"], b["id"], 10, pending=True)
    assert new_hold.status_code == 422 and new_hold.json()["code"] == "account_not_active"
    assert (await client.post(f"/v1/transfers/{first['id']}/post")).status_code == 200
    assert (await client.post(f"/v1/transfers/{second['id']}/void")).status_code == 200
    assert (await balances(client, a["id"]))["posted"] == 900
    # closing needs zero balances, holds included
    account = await client.get(f"/v1/accounts/{b['id']}")
    closing = await client.patch(
        f"/v1/accounts/{b['id']}",
        json={"status": "closed"},
        headers={"If-Match": account.headers["etag"]},
    )
    assert closing.status_code == 422 and closing.json()["code"] == "account_not_empty"


async def test_expiry_worker_releases_due_holds(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    _, a, b = await funded_pair(client, 1000)
    due = (await transfer(client, a["id"], b["id"], 100, pending=True, timeout_seconds=1)).json()
    later = (
        await transfer(client, a["id"], b["id"], 200, pending=True, timeout_seconds=3600)
    ).json()
    never = (await transfer(client, a["id"], b["id"], 300, pending=True)).json()
    assert due["timeout_at"] is not None and never["timeout_at"] is None
    await asyncio.sleep(1.2)
    # a confirm after the deadline is refused even before the worker ran
    late_post = await client.post(f"/v1/transfers/{due['id']}/post")
    assert late_post.status_code == 409 and late_post.json()["code"] == "transfer_not_pending"
    engine = create_engine(settings, pool_size=2)
    try:
        assert await expire_step(create_sessionmaker(engine)) == 1
        assert await expire_step(create_sessionmaker(engine)) == 0
    finally:
        await engine.dispose()
    states = {
        t: (await client.get(f"/v1/transfers/{t}")).json()["state"]
        for t in (due["id"], later["id"], never["id"])
    }
    assert states == {due["id"]: "expired", later["id"]: "pending", never["id"]: "pending"}
    assert (await balances(client, a["id"]))["pending_debits"] == 500
    voided = await client.post(f"/v1/transfers/{due['id']}/void")
    assert voided.status_code == 409 and voided.json()["code"] == "transfer_not_pending"
    assert await violations(settings) == []


async def test_timeout_requires_pending(client: AsyncTestClient[Any]) -> None:
    _, a, b = await funded_pair(client, 1000)
    response = await transfer(client, a["id"], b["id"], 10, timeout_seconds=5)
    assert response.status_code == 422 and response.json()["code"] == "validation_error"


async def test_verify_catches_a_pending_balance_out_of_step(
    client: AsyncTestClient[Any], settings: Settings, db_url: str
) -> None:
    _, a, b = await funded_pair(client, 1000)
    await transfer(client, a["id"], b["id"], 100, pending=True)
    assert await violations(settings) == []
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE accounts SET pending_debits = pending_debits - 1 WHERE id = %s", (a["id"],)
        )
    found = await violations(settings)
    assert any("pending balance differs" in line and a["id"] in line for line in found), found


async def test_expiry_by_two_workers_releases_once(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    _, a, b = await funded_pair(client, 10_000)
    for _ in range(20):
        response = await transfer(client, a["id"], b["id"], 50, pending=True, timeout_seconds=1)
        assert response.status_code == 201
    await asyncio.sleep(1.2)
    engines = [create_engine(settings, pool_size=2) for _ in range(2)]
    try:
        counts = await asyncio.gather(*(expire_step(create_sessionmaker(e)) for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert sum(counts) == 20
    assert (await balances(client, a["id"]))["pending_debits"] == 0
    assert (await balances(client, a["id"]))["available"] == 10_000
    assert await violations(settings) == []
