"""Posted transfers over HTTP: every refusal, client ids, reversals, batches and lists."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import psycopg

from ledger.core import limits
from tests.helpers import balances, create_account, funded_pair, transfer
from tests.test_api_accounts import assert_problem

TRANSFER_KEYS = {
    "id",
    "balances_after",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "currency",
    "state",
    "posted_amount",
    "reference",
    "metadata",
    "timeout_at",
    "created_at",
    "updated_at",
    "reversal_of",
}


def counts(db: psycopg.Connection[Any]) -> tuple[int, int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM transfers), (SELECT count(*) FROM entries),"
        " (SELECT count(*) FROM outbox_events)"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


async def test_a_posted_transfer_and_its_read_back(client: httpx.AsyncClient) -> None:
    source, a, b = await funded_pair(client, 1000)
    response = await transfer(
        client, a["id"], b["id"], 250, currency="USD", reference="inv-1", metadata={"k": "v"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == TRANSFER_KEYS
    assert (body["state"], body["amount"], body["posted_amount"]) == ("posted", 250, 250)
    assert (body["debit_account_id"], body["credit_account_id"]) == (a["id"], b["id"])
    assert (body["reference"], body["metadata"], body["currency"]) == ("inv-1", {"k": "v"}, "USD")
    assert body["reversal_of"] is None and body["timeout_at"] is None
    assert uuid.UUID(body["id"]).version == 7
    read = await client.get(f"/v1/transfers/{body['id']}")
    assert read.status_code == 200 and read.json() == body
    assert (await balances(client, a["id"]))["posted"] == 750
    assert (await balances(client, b["id"]))["posted"] == 250
    assert (await balances(client, source["id"]))["posted"] == 1000
    assert_problem(await client.get(f"/v1/transfers/{uuid.uuid4()}"), 404, "transfer_not_found")


async def test_client_ids_exist_or_exist_with_different_fields(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 1000)
    transfer_id = str(uuid.uuid4())
    first = await transfer(client, a["id"], b["id"], 100, id=transfer_id, reference="r")
    assert first.status_code == 201, first.text
    assert first.json()["id"] == transfer_id
    before = counts(sync_db)
    again = await transfer(client, a["id"], b["id"], 100, id=transfer_id, reference="r")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    for change in (
        {"amount": 101},
        {"reference": "other"},
        {"metadata": {"x": 1}},
        {"currency": "EUR"},
    ):
        body = {
            "id": transfer_id,
            "debit_account_id": a["id"],
            "credit_account_id": b["id"],
            "amount": 100,
            "reference": "r",
            **change,
        }
        response = await client.post("/v1/transfers", json=body)
        assert_problem(response, 409, "transfer_exists_with_different_fields")
    swapped = await transfer(client, b["id"], a["id"], 100, id=transfer_id, reference="r")
    assert_problem(swapped, 409, "transfer_exists_with_different_fields")
    assert counts(sync_db) == before
    assert (await balances(client, a["id"]))["posted"] == 900


async def test_every_refusal_of_a_transfer(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 100)
    eur = await create_account(client, currency="EUR")
    frozen = await create_account(client)
    response = await client.patch(
        f"/v1/accounts/{frozen['id']}", json={"status": "frozen"}, headers={"If-Match": '"1"'}
    )
    assert response.status_code == 200
    before = counts(sync_db)
    missing = str(uuid.uuid4())
    assert_problem(await transfer(client, a["id"], missing, 1), 404, "account_not_found")
    assert_problem(await transfer(client, missing, a["id"], 1), 404, "account_not_found")
    assert_problem(await transfer(client, a["id"], a["id"], 1), 422, "same_account")
    assert_problem(await transfer(client, a["id"], eur["id"], 1), 422, "currency_mismatch")
    assert_problem(
        await transfer(client, a["id"], b["id"], 1, currency="EUR"), 422, "currency_mismatch"
    )
    assert_problem(await transfer(client, a["id"], frozen["id"], 1), 422, "account_not_active")
    assert_problem(await transfer(client, a["id"], b["id"], 101), 422, "insufficient_funds")
    assert counts(sync_db) == before
    assert (await balances(client, a["id"]))["posted"] == 100
    assert (await transfer(client, a["id"], b["id"], 100)).status_code == 201


async def test_balances_never_wrap(client: httpx.AsyncClient) -> None:
    source, a, b = await funded_pair(client, 0)
    top = await transfer(client, source["id"], a["id"], limits.AMOUNT_MAX)
    assert top.status_code == 201, top.text
    assert (await balances(client, a["id"]))["posted"] == limits.AMOUNT_MAX
    assert_problem(await transfer(client, source["id"], a["id"], 1), 422, "amount_overflow")
    other = await create_account(client, normal_balance="debit", min_balance=None)
    assert_problem(await transfer(client, other["id"], a["id"], 1), 422, "amount_overflow")
    assert (await balances(client, a["id"]))["posted"] == limits.AMOUNT_MAX
    assert (await balances(client, other["id"]))["posted"] == 0
    # spending from the full account still works
    assert (await transfer(client, a["id"], b["id"], limits.AMOUNT_MAX)).status_code == 201


async def test_reversals_are_partial_and_never_exceed_what_was_posted(
    client: httpx.AsyncClient,
) -> None:
    _source, a, b = await funded_pair(client, 1000)
    original = (await transfer(client, a["id"], b["id"], 300, reference="order-7")).json()
    url = f"/v1/transfers/{original['id']}/reverse"
    first = await client.post(url, json={"amount": 100})
    assert first.status_code == 201, first.text
    reversal = first.json()
    assert reversal["reversal_of"] == original["id"]
    assert (reversal["debit_account_id"], reversal["credit_account_id"]) == (b["id"], a["id"])
    assert (reversal["amount"], reversal["state"]) == (100, "posted")
    assert reversal["id"] != original["id"]
    assert_problem(await client.post(url, json={"amount": 201}), 422, "reversal_exceeds_posted")
    rest = await client.post(url)
    assert rest.status_code == 201, rest.text
    assert rest.json()["amount"] == 200
    assert_problem(await client.post(url), 422, "reversal_exceeds_posted")
    assert_problem(await client.post(url, json={"amount": 1}), 422, "reversal_exceeds_posted")
    assert (await balances(client, a["id"]))["posted"] == 1000
    assert (await balances(client, b["id"]))["posted"] == 0
    original_now = (await client.get(f"/v1/transfers/{original['id']}")).json()
    assert (original_now["state"], original_now["posted_amount"]) == ("posted", 300)
    assert_problem(
        await client.post(f"/v1/transfers/{uuid.uuid4()}/reverse"), 404, "transfer_not_found"
    )
    assert_problem(await client.post(url, json={"amount": 0}), 422, "validation_error")


async def test_a_reversal_respects_the_floor_and_frozen_accounts(
    client: httpx.AsyncClient,
) -> None:
    source, a, b = await funded_pair(client, 1000)
    original = (await transfer(client, a["id"], b["id"], 300)).json()
    # b spends what it received: reversing would take b below its floor
    assert (await transfer(client, b["id"], source["id"], 250)).status_code == 201
    url = f"/v1/transfers/{original['id']}/reverse"
    assert_problem(await client.post(url), 422, "insufficient_funds")
    assert (await client.post(url, json={"amount": 50})).status_code == 201
    version = (await client.get(f"/v1/accounts/{a['id']}")).json()["version"]
    frozen = await client.patch(
        f"/v1/accounts/{a['id']}", json={"status": "frozen"}, headers={"If-Match": f'"{version}"'}
    )
    assert frozen.status_code == 200
    assert_problem(await client.post(url, json={"amount": 1}), 422, "account_not_active")


async def test_batch_not_atomic_answers_each_item(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 100)
    response = await client.post(
        "/v1/transfers/batch",
        json={
            "atomic": False,
            "transfers": [
                {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 60},
                {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 60},
                {"debit_account_id": a["id"], "credit_account_id": a["id"], "amount": 1},
                {"debit_account_id": b["id"], "credit_account_id": a["id"], "amount": 10},
            ],
        },
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["index"], r["status"]) for r in results] == [(0, 201), (1, 422), (2, 422), (3, 201)]
    assert results[1]["error"]["code"] == "insufficient_funds"
    assert results[2]["error"]["code"] == "same_account"
    assert set(results[1]["error"]) >= {"type", "title", "status", "detail", "code"}
    assert "error" not in results[0] and results[0]["transfer"]["amount"] == 60
    assert (await balances(client, a["id"]))["posted"] == 50
    assert (await balances(client, b["id"]))["posted"] == 50


async def test_atomic_batch_commits_all_or_nothing(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 100)
    c = await create_account(client)
    before = counts(sync_db)
    failing = await client.post(
        "/v1/transfers/batch",
        json={
            "atomic": True,
            "transfers": [
                {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 60},
                {"debit_account_id": a["id"], "credit_account_id": c["id"], "amount": 60},
                {"debit_account_id": b["id"], "credit_account_id": c["id"], "amount": 10},
            ],
        },
    )
    assert failing.status_code == 200, failing.text
    results = failing.json()["results"]
    assert [(r["status"], r["error"]["code"]) for r in results] == [
        (422, "not_committed"),
        (422, "insufficient_funds"),
        (422, "not_committed"),
    ]
    assert counts(sync_db) == before
    assert (await balances(client, a["id"]))["posted"] == 100
    # a later item may spend what an earlier one brought
    chained = await client.post(
        "/v1/transfers/batch",
        json={
            "atomic": True,
            "transfers": [
                {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 100},
                {"debit_account_id": b["id"], "credit_account_id": c["id"], "amount": 100},
                {"debit_account_id": c["id"], "credit_account_id": a["id"], "amount": 30},
            ],
        },
    )
    assert [r["status"] for r in chained.json()["results"]] == [201, 201, 201]
    assert [(await balances(client, x["id"]))["posted"] for x in (a, b, c)] == [30, 0, 70]


async def test_batch_bounds_and_item_validation(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 100)
    before = counts(sync_db)
    item = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 1}
    empty = await client.post("/v1/transfers/batch", json={"atomic": False, "transfers": []})
    assert_problem(empty, 422, "validation_error")
    too_many = await client.post(
        "/v1/transfers/batch",
        json={"atomic": False, "transfers": [item] * (limits.BATCH_TRANSFERS_MAX + 1)},
    )
    assert_problem(too_many, 422, "validation_error")
    bad_item = await client.post(
        "/v1/transfers/batch",
        json={"atomic": False, "transfers": [item, {**item, "amount": 1.5}]},
    )
    body = assert_problem(bad_item, 422, "validation_error")
    assert body["errors"][0]["field"] == "transfers.1.amount"
    no_atomic = await client.post("/v1/transfers/batch", json={"transfers": [item]})
    assert_problem(no_atomic, 422, "validation_error")
    assert counts(sync_db) == before


async def test_batch_reuses_client_ids_like_single_creates(client: httpx.AsyncClient) -> None:
    _source, a, b = await funded_pair(client, 100)
    transfer_id = str(uuid.uuid4())
    item = {"id": transfer_id, "debit_account_id": a["id"], "credit_account_id": b["id"]}
    response = await client.post(
        "/v1/transfers/batch",
        json={
            "atomic": False,
            "transfers": [{**item, "amount": 5}, {**item, "amount": 5}, {**item, "amount": 6}],
        },
    )
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 200, 409]
    assert results[2]["error"]["code"] == "transfer_exists_with_different_fields"
    assert (await balances(client, a["id"]))["posted"] == 95


async def test_list_transfers_by_account_and_state_with_cursors(
    client: httpx.AsyncClient,
) -> None:
    source, a, b = await funded_pair(client, 1000)
    c = await create_account(client)
    mine = [(await transfer(client, a["id"], b["id"], n)).json()["id"] for n in range(1, 6)]
    mine.append((await transfer(client, b["id"], a["id"], 1)).json()["id"])
    await transfer(client, source["id"], c["id"], 7)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"account_id": a["id"], "limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/transfers", params=params)).json()
        seen += [t["id"] for t in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # a's funding transfer, five outgoing, one incoming; nothing of c's
    assert len(seen) == len(set(seen)) == 7
    assert set(mine) <= set(seen)
    posted = (await client.get("/v1/transfers", params={"state": "posted", "limit": 1000})).json()
    assert len(posted["data"]) == 8 and posted["next_cursor"] is None
    pending = (await client.get("/v1/transfers", params={"state": "pending"})).json()
    assert pending == {"data": [], "next_cursor": None}
    assert_problem(
        await client.get("/v1/transfers", params={"state": "lost"}), 422, "validation_error"
    )
    assert_problem(
        await client.get("/v1/transfers", params={"account_id": "nope"}), 422, "validation_error"
    )


async def test_concurrent_reversals_never_exceed_what_was_posted(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 1000)
    original = (await transfer(client, a["id"], b["id"], 100)).json()
    url = f"/v1/transfers/{original['id']}/reverse"
    answers = await asyncio.gather(*(client.post(url, json={"amount": 7}) for _ in range(20)))
    done = [r for r in answers if r.status_code == 201]
    assert len(done) == 14, [r.text for r in answers if r.status_code != 201]
    for r in answers:
        if r.status_code != 201:
            assert_problem(r, 422, "reversal_exceeds_posted")
    row = sync_db.execute(
        "SELECT coalesce(sum(amount), 0) FROM transfers WHERE reversal_of = %s", (original["id"],)
    ).fetchone()
    assert row == (98,)
    assert (await balances(client, b["id"]))["posted"] == 2


async def test_a_large_batch_keeps_awkward_text_exactly(client: httpx.AsyncClient) -> None:
    """Large batches are written with COPY: tabs, newlines, backslashes, quotes and non-ASCII in
    references and metadata must come back exactly as sent."""
    _source, a, b = await funded_pair(client, 10_000)
    awkward = "tab\there\nnew line \\ back\\\\slash 'single' \"double\" \u2603 \\N \\."
    items = [
        {
            "debit_account_id": a["id"],
            "credit_account_id": b["id"],
            "amount": n + 1,
            "reference": f"{awkward} {n}",
            "metadata": {awkward: [awkward, n, None, True, {"\\": "\t"}]},
        }
        for n in range(100)
    ]
    response = await client.post("/v1/transfers/batch", json={"atomic": True, "transfers": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201] * 100
    for item, result in zip(items, results, strict=True):
        stored = (await client.get(f"/v1/transfers/{result['transfer']['id']}")).json()
        assert (stored["reference"], stored["metadata"]) == (item["reference"], item["metadata"])
    assert (await balances(client, b["id"]))["posted"] == sum(range(1, 101))
    entries = (await client.get(f"/v1/accounts/{b['id']}/entries", params={"limit": 1000})).json()
    assert [e["balance_after"] for e in entries["data"]][-1] == sum(range(1, 101))
