"""Accounts over HTTP: create (idempotent by id), get with ETag, list with filters and cursors,
PATCH with If-Match, freeze/close rules, statements and point-in-time balances."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import httpx

from ledger.core.settings import Settings
from tests.helpers import balances, create_account, funded_pair, live_server, transfer

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert (body["status"], body["code"]) == (status, code), body
    return body


async def test_create_returns_the_account_with_zero_balances(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/accounts",
        json={
            "code": "cash:eur",
            "currency": "EUR",
            "normal_balance": "debit",
            "min_balance": None,
            "metadata": {"team": "payments"},
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {
        "id",
        "code",
        "currency",
        "normal_balance",
        "min_balance",
        "status",
        "metadata",
        "version",
        "created_at",
        "balances",
    }
    assert uuid.UUID(body["id"]).version == 7
    assert (body["code"], body["currency"], body["normal_balance"]) == ("cash:eur", "EUR", "debit")
    assert (body["min_balance"], body["status"], body["version"]) == (None, "active", 1)
    assert body["metadata"] == {"team": "payments"}
    assert body["balances"] == {
        "posted": 0,
        "available": 0,
        "posted_debits": 0,
        "posted_credits": 0,
        "pending_debits": 0,
        "pending_credits": 0,
    }
    assert body["created_at"].endswith("Z")


async def test_min_balance_defaults_to_zero(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    assert account["min_balance"] == 0


async def test_create_with_the_same_id_is_idempotent(client: httpx.AsyncClient) -> None:
    account_id = str(uuid.uuid4())
    body = {"id": account_id, "code": "same-id", "currency": "USD", "normal_balance": "credit"}
    first = await client.post("/v1/accounts", json=body)
    assert first.status_code == 201, first.text
    again = await client.post("/v1/accounts", json=body)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    other = await client.post("/v1/accounts", json={**body, "normal_balance": "debit"})
    assert_problem(other, 409, "account_exists_with_different_fields")
    listed = await client.get("/v1/accounts", params={"code": "same-id"})
    assert [a["id"] for a in listed.json()["data"]] == [account_id]


async def test_a_taken_code_is_refused(client: httpx.AsyncClient) -> None:
    await create_account(client, code="taken")
    response = await client.post(
        "/v1/accounts", json={"code": "taken", "currency": "USD", "normal_balance": "credit"}
    )
    assert_problem(response, 409, "account_code_exists")


async def test_concurrent_creates_of_one_code_or_id_make_one_account(settings: Settings) -> None:
    """Real concurrency (a live server): the losers of a race on a code get 409, on an id 200;
    never a 500 from the unique index."""
    async with (
        live_server(settings) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {settings.admin_key}"}
        ) as http,
    ):
        by_code = {"code": "race", "currency": "USD", "normal_balance": "credit"}
        answers = await asyncio.gather(*(http.post("/v1/accounts", json=by_code) for _ in range(8)))
        assert sorted(r.status_code for r in answers) == [201] + [409] * 7, [
            r.text for r in answers
        ]
        for response in answers:
            if response.status_code == 409:
                assert_problem(response, 409, "account_code_exists")
        by_id = {
            "id": str(uuid.uuid4()),
            "code": "id-race",
            "currency": "USD",
            "normal_balance": "debit",
        }
        answers = await asyncio.gather(*(http.post("/v1/accounts", json=by_id) for _ in range(8)))
        assert sorted(r.status_code for r in answers) == [200] * 7 + [201], [
            r.text for r in answers
        ]
        assert len({r.text for r in answers}) == 1
        listed = await http.get("/v1/accounts")
        assert sorted(a["code"] for a in listed.json()["data"]) == ["id-race", "race"]


async def test_positive_min_balance_on_a_new_account_is_refused(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/accounts",
        json={"code": "floor", "currency": "USD", "normal_balance": "credit", "min_balance": 1},
    )
    assert_problem(response, 422, "min_balance_violated")
    assert (await client.get("/v1/accounts", params={"code": "floor"})).json()["data"] == []


async def test_get_has_an_etag_and_unknown_ids_are_404(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    response = await client.get(f"/v1/accounts/{account['id']}")
    assert response.status_code == 200
    assert response.headers["etag"] == '"1"'
    assert response.json() == account
    assert_problem(await client.get(f"/v1/accounts/{uuid.uuid4()}"), 404, "account_not_found")


async def test_list_filters_and_walks_every_page_once(client: httpx.AsyncClient) -> None:
    usd = [await create_account(client, currency="USD") for _ in range(5)]
    eur = [await create_account(client, currency="EUR") for _ in range(2)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"currency": "USD", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/v1/accounts", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "next_cursor"}
        assert len(body["data"]) <= 2
        seen += [a["id"] for a in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert sorted(seen) == sorted(a["id"] for a in usd)
    assert len(seen) == len(set(seen))
    eur_page = await client.get("/v1/accounts", params={"currency": "EUR"})
    assert {a["id"] for a in eur_page.json()["data"]} == {a["id"] for a in eur}
    assert eur_page.json()["next_cursor"] is None
    by_code = await client.get("/v1/accounts", params={"code": usd[0]["code"]})
    assert [a["id"] for a in by_code.json()["data"]] == [usd[0]["id"]]
    frozen = await client.patch(
        f"/v1/accounts/{eur[0]['id']}", json={"status": "frozen"}, headers={"If-Match": '"1"'}
    )
    assert frozen.status_code == 200, frozen.text
    by_status = await client.get("/v1/accounts", params={"status": "frozen"})
    assert [a["id"] for a in by_status.json()["data"]] == [eur[0]["id"]]


async def test_list_limit_bounds(client: httpx.AsyncClient) -> None:
    for limit in (0, 1001, -1):
        response = await client.get("/v1/accounts", params={"limit": limit})
        assert_problem(response, 422, "validation_error")
    assert (await client.get("/v1/accounts", params={"limit": 1000})).status_code == 200
    bad_cursor = await client.get("/v1/accounts", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert_problem(bad_cursor, 422, "validation_error")


async def test_patch_needs_if_match_and_refuses_stale_versions(
    client: httpx.AsyncClient,
) -> None:
    account = await create_account(client)
    url = f"/v1/accounts/{account['id']}"
    assert_problem(
        await client.patch(url, json={"metadata": {"a": 1}}), 428, "precondition_required"
    )
    ok = await client.patch(url, json={"metadata": {"a": 1}}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200, ok.text
    assert ok.headers["etag"] == '"2"'
    assert (ok.json()["version"], ok.json()["metadata"]) == (2, {"a": 1})
    stale = await client.patch(url, json={"metadata": {"a": 2}}, headers={"If-Match": '"1"'})
    assert_problem(stale, 412, "precondition_failed")
    assert (await client.get(url)).json()["metadata"] == {"a": 1}
    missing = await client.patch(
        f"/v1/accounts/{uuid.uuid4()}", json={"metadata": {}}, headers={"If-Match": '"1"'}
    )
    assert_problem(missing, 404, "account_not_found")


async def test_version_grows_with_every_balance_change(client: httpx.AsyncClient) -> None:
    _source, a, b = await funded_pair(client, 100)
    assert (await client.get(f"/v1/accounts/{a['id']}")).headers["etag"] == '"2"'
    await transfer(client, a["id"], b["id"], 10)
    response = await client.get(f"/v1/accounts/{a['id']}")
    assert response.json()["version"] == 3
    assert response.headers["etag"] == '"3"'


async def test_frozen_accounts_refuse_transfers_until_thawed(
    client: httpx.AsyncClient,
) -> None:
    _source, a, b = await funded_pair(client, 100)
    url = f"/v1/accounts/{a['id']}"
    frozen = await client.patch(url, json={"status": "frozen"}, headers={"If-Match": '"2"'})
    assert frozen.status_code == 200 and frozen.json()["status"] == "frozen"
    assert_problem(await transfer(client, a["id"], b["id"], 1), 422, "account_not_active")
    assert_problem(await transfer(client, b["id"], a["id"], 1), 422, "account_not_active")
    thawed = await client.patch(url, json={"status": "active"}, headers={"If-Match": '"3"'})
    assert thawed.status_code == 200
    assert (await transfer(client, a["id"], b["id"], 1)).status_code == 201


async def test_close_only_from_zero_balances_and_closed_is_final(
    client: httpx.AsyncClient,
) -> None:
    source, a, _b = await funded_pair(client, 100)
    url = f"/v1/accounts/{a['id']}"
    refused = await client.patch(url, json={"status": "closed"}, headers={"If-Match": '"2"'})
    assert_problem(refused, 422, "account_not_empty")
    assert (await transfer(client, a["id"], source["id"], 100)).status_code == 201
    closed = await client.patch(url, json={"status": "closed"}, headers={"If-Match": '"3"'})
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    again = await client.patch(url, json={"status": "active"}, headers={"If-Match": '"4"'})
    assert_problem(again, 422, "account_closed")
    assert_problem(await transfer(client, source["id"], a["id"], 1), 422, "account_not_active")


async def test_raising_the_floor_above_available_is_refused(
    client: httpx.AsyncClient,
) -> None:
    _source, a, b = await funded_pair(client, 100)
    url = f"/v1/accounts/{a['id']}"
    refused = await client.patch(url, json={"min_balance": 101}, headers={"If-Match": '"2"'})
    assert_problem(refused, 422, "min_balance_violated")
    ok = await client.patch(url, json={"min_balance": 60}, headers={"If-Match": '"2"'})
    assert ok.status_code == 200 and ok.json()["min_balance"] == 60
    assert_problem(await transfer(client, a["id"], b["id"], 41), 422, "insufficient_funds")
    assert (await transfer(client, a["id"], b["id"], 40)).status_code == 201
    overdraft = await client.patch(url, json={"min_balance": -50}, headers={"If-Match": '"4"'})
    assert overdraft.status_code == 200
    assert (await transfer(client, a["id"], b["id"], 110)).status_code == 201
    assert (await balances(client, a["id"]))["available"] == -50


async def test_statement_has_running_balances_oldest_first(
    client: httpx.AsyncClient,
) -> None:
    _source, a, b = await funded_pair(client, 100)
    t1 = (await transfer(client, a["id"], b["id"], 30)).json()
    t2 = (await transfer(client, b["id"], a["id"], 5)).json()
    response = await client.get(f"/v1/accounts/{a['id']}/entries")
    assert response.status_code == 200, response.text
    entries = response.json()["data"]
    assert [(e["direction"], e["amount"], e["balance_after"]) for e in entries] == [
        ("credit", 100, 100),
        ("debit", 30, 70),
        ("credit", 5, 75),
    ]
    assert [e["transfer_id"] for e in entries[1:]] == [t1["id"], t2["id"]]
    assert [e["sequence"] for e in entries] == sorted(e["sequence"] for e in entries)
    assert set(entries[0]) == {
        "sequence",
        "transfer_id",
        "direction",
        "amount",
        "balance_after",
        "posted_at",
    }
    first_page = await client.get(f"/v1/accounts/{a['id']}/entries", params={"limit": 2})
    assert [e["sequence"] for e in first_page.json()["data"]] == [
        e["sequence"] for e in entries[:2]
    ]
    rest = await client.get(
        f"/v1/accounts/{a['id']}/entries",
        params={"limit": 2, "cursor": first_page.json()["next_cursor"]},
    )
    assert [e["sequence"] for e in rest.json()["data"]] == [entries[2]["sequence"]]
    since = await client.get(
        f"/v1/accounts/{a['id']}/entries", params={"from": entries[1]["posted_at"]}
    )
    assert [e["sequence"] for e in since.json()["data"]] == [e["sequence"] for e in entries[1:]]
    until = await client.get(
        f"/v1/accounts/{a['id']}/entries", params={"to": entries[1]["posted_at"]}
    )
    assert [e["sequence"] for e in until.json()["data"]] == [entries[0]["sequence"]]
    assert_problem(
        await client.get(f"/v1/accounts/{uuid.uuid4()}/entries"), 404, "account_not_found"
    )


async def test_balance_as_of_a_past_instant(client: httpx.AsyncClient) -> None:
    _source, a, b = await funded_pair(client, 100)
    entries = (await client.get(f"/v1/accounts/{a['id']}/entries")).json()["data"]
    funded_at = dt.datetime.fromisoformat(entries[0]["posted_at"])
    await transfer(client, a["id"], b["id"], 40)
    before = funded_at - dt.timedelta(microseconds=1)
    url = f"/v1/accounts/{a['id']}/balance"
    early = (await client.get(url, params={"as_of": before.isoformat()})).json()
    assert (early["posted"], early["sequence"]) == (0, 0)
    at_funding = (await client.get(url, params={"as_of": funded_at.isoformat()})).json()
    assert at_funding["posted"] == 100
    assert at_funding["account_id"] == a["id"]
    now = (await client.get(url)).json()
    assert now["posted"] == 60
    assert now["sequence"] == (await client.get(f"/v1/accounts/{a['id']}")).json()["version"]
    naive = await client.get(url, params={"as_of": "2030-01-01T00:00:00"})
    assert_problem(naive, 422, "validation_error")
    garbage = await client.get(url, params={"as_of": "yesterday"})
    assert_problem(garbage, 422, "validation_error")


async def test_concurrent_patches_with_one_etag_apply_once(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    url = f"/v1/accounts/{account['id']}"
    answers = await asyncio.gather(
        *(
            client.patch(url, json={"metadata": {"n": n}}, headers={"If-Match": '"1"'})
            for n in range(10)
        )
    )
    winners = [r for r in answers if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in answers]
    for response in answers:
        if response.status_code != 200:
            assert_problem(response, 412, "precondition_failed")
    stored = (await client.get(url)).json()
    assert (stored["version"], stored["metadata"]) == (2, winners[0].json()["metadata"])
