"""`balances_after` on every transfer response: both accounts' balances right after that
transfer's change, from the locked state it was decided on (each batch item its own moment), and
the same values on a later GET, whatever moved the accounts since."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.helpers import balances, create_account, funded_pair, live_server, transfer


def after(body: dict[str, Any], account: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = body["balances_after"][account["id"]]
    return result


async def test_create_answers_both_accounts_balances_and_get_keeps_them(
    client: httpx.AsyncClient,
) -> None:
    _source, a, b = await funded_pair(client, 1000)
    first = await transfer(client, a["id"], b["id"], 300)
    assert first.status_code == 201, first.text
    body = first.json()
    assert set(body["balances_after"]) == {a["id"], b["id"]}
    assert after(body, a) == await balances(client, a["id"])
    assert after(body, b) == await balances(client, b["id"])
    assert after(body, a)["posted"] == 700 and after(body, b)["posted"] == 300
    second = await transfer(client, a["id"], b["id"], 200)
    assert after(second.json(), a)["posted"] == 500
    # GET answers the balances after the transfer's own last change, not the accounts' now.
    read = await client.get(f"/v1/transfers/{body['id']}")
    assert read.status_code == 200 and read.json()["balances_after"] == body["balances_after"]
    # A same-id retry (200) answers the same, as it answers the same transfer.
    again = await transfer(client, a["id"], b["id"], 300, id=body["id"])
    assert again.status_code == 200 and again.json()["balances_after"] == body["balances_after"]


async def test_hold_post_void_and_reverse_each_answer_their_own_moment(
    client: httpx.AsyncClient,
) -> None:
    _source, a, b = await funded_pair(client, 1000)
    held = (await transfer(client, a["id"], b["id"], 400, pending=True)).json()
    assert after(held, a) == {
        "posted": 1000,
        "available": 600,
        "posted_debits": 0,
        "posted_credits": 1000,
        "pending_debits": 400,
        "pending_credits": 0,
    }
    assert after(held, b)["pending_credits"] == 400 and after(held, b)["posted"] == 0
    posted = await client.post(f"/v1/transfers/{held['id']}/post", json={"amount": 150})
    assert posted.status_code == 200, posted.text
    assert after(posted.json(), a) == {
        "posted": 850,
        "available": 850,
        "posted_debits": 150,
        "posted_credits": 1000,
        "pending_debits": 0,
        "pending_credits": 0,
    }
    other = (await transfer(client, a["id"], b["id"], 50, pending=True)).json()
    voided = await client.post(f"/v1/transfers/{other['id']}/void")
    assert after(voided.json(), a)["available"] == 850
    reversed_ = await client.post(f"/v1/transfers/{held['id']}/reverse", json={"amount": 100})
    assert reversed_.status_code == 201, reversed_.text
    # The reversal debits b and credits a: its own accounts, its own moment.
    assert after(reversed_.json(), a)["posted"] == 950
    assert after(reversed_.json(), b)["posted"] == 50
    # The original keeps the balances of its own last move (the post), not the reversal's.
    read = (await client.get(f"/v1/transfers/{held['id']}")).json()
    assert after(read, a)["posted"] == 850
    empty = (await client.post("/v1/transfers/01900000-0000-7000-8000-000000000001/void")).json()
    assert empty["balances_after"] == {}


async def test_batch_items_each_carry_the_balances_after_their_own_move(
    client: httpx.AsyncClient,
) -> None:
    """600 items (the bulk path copies from 500 rows on), one refused in the middle: each item's
    balances are its own step, the refused one moves nothing."""
    _source, a, b = await funded_pair(client, 10_000)
    items = [{"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 10}] * 600
    items[300] = {**items[300], "amount": 1_000_000}  # more than a holds: refused
    response = await client.post("/v1/transfers/batch", json={"atomic": False, "transfers": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[300]["status"] == 422
    moved = 0
    for index, item in enumerate(results):
        if index == 300:
            continue
        moved += 10
        assert item["status"] == 201
        assert after(item["transfer"], a)["posted"] == 10_000 - moved
        assert after(item["transfer"], b)["posted"] == moved
    last = results[-1]["transfer"]
    read = (await client.get(f"/v1/transfers/{last['id']}")).json()
    assert read["balances_after"] == last["balances_after"]
    assert after(last, a) == await balances(client, a["id"])


async def test_concurrent_transfers_through_group_commit_each_see_one_distinct_step(
    settings: Any,
) -> None:
    """Fifty concurrent transfers from one account, gathered into shared transactions by group
    commit: every response names a different step of the account, and together they are every
    step from 50 down to 1 unit moved, as if taken one by one."""
    from ledger.cli.main import ensure_admin_key

    await ensure_admin_key(settings)
    async with (
        live_server(settings) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {settings.admin_key}"}, timeout=60
        ) as http,
    ):
        _source, a, b = await funded_pair(http, 50)
        other = await create_account(http)
        responses = await asyncio.gather(
            *(transfer(http, a["id"], b["id"] if i % 2 else other["id"], 1) for i in range(50))
        )
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    seen = sorted(after(r.json(), a)["posted"] for r in responses)
    assert seen == list(range(50))
    for r in responses:  # the credit side is the account this transfer credited
        body = r.json()
        assert set(body["balances_after"]) == {a["id"], body["credit_account_id"]}


async def test_verify_names_balances_after_that_disagree_with_the_entries(
    client: httpx.AsyncClient, settings: Any, sync_db: Any
) -> None:
    """Changed behind the service's back (the guard lets a posted row's other columns change),
    the kept balances no longer match the entries' balance_after: `ledger verify` says so."""
    from tests.helpers import violations

    _source, a, b = await funded_pair(client, 1000)
    body = (await transfer(client, a["id"], b["id"], 300)).json()
    assert await violations(settings) == []
    sync_db.execute(
        "UPDATE transfers SET balances_after[1] = balances_after[1] + 1 WHERE id = %s",
        (body["id"],),
    )
    found = await violations(settings)
    assert len(found) == 1 and body["id"] in found[0], found
    assert found[0].startswith("balances_after of a transfer differ from its entries")
