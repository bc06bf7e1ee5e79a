"""The reviewer's side: GET /v1/audit (filters, pages, roles), GET /v1/audit/verify (roles) and
`ledger audit show` (one object's history as a readable timeline)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from tests.audit_helpers import run_cli
from tests.helpers import funded_pair, transfer


async def _key(client: AsyncTestClient[Any], role: str) -> str:
    response = await client.post("/v1/api-keys", json={"name": f"{role}-key", "role": role})
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


async def _get(client: AsyncTestClient[Any], url: str, secret: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {secret}"} if secret else None
    return await client.get(url, headers=headers)


async def test_only_auditors_and_admins_read_the_trail(client: AsyncTestClient[Any]) -> None:
    auditor = await _key(client, "auditor")
    for role in ("reader", "operator"):
        secret = await _key(client, role)
        for url in ("/v1/audit", "/v1/audit/verify"):
            response = await _get(client, url, secret)
            assert response.status_code == 403, (role, url)
            assert response.json()["code"] == "forbidden"
    for url in ("/v1/audit", "/v1/audit/verify"):
        assert (await _get(client, url, auditor)).status_code == 200
        assert (await client.get(url, headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_filters_and_pages_oldest_first(client: AsyncTestClient[Any]) -> None:
    started = dt.datetime.now(dt.UTC)
    _, a, b = await funded_pair(client, 1_000)
    moved = [await transfer(client, a["id"], b["id"], n) for n in (1, 2, 3)]
    operator = await _key(client, "operator")
    by_operator = await client.post(
        "/v1/transfers",
        json={"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 4},
        headers={"Authorization": f"Bearer {operator}"},
    )
    assert by_operator.status_code == 201

    everything = (await client.get("/v1/audit", params={"limit": 1000})).json()["data"]
    seqs = [r["seq"] for r in everything]
    assert seqs == sorted(seqs)
    # the admin key (made by the CLI), 3 accounts, funding, 3 moves, a key, its transfer
    assert len(everything) == 1 + 3 + 1 + 3 + 1 + 1
    assert (everything[0]["action"], everything[0]["actor"]["name"]) == ("api_key.create", "cli")
    first = everything[1]
    assert set(first) >= {
        "id",
        "at",
        "actor",
        "action",
        "object_type",
        "object_id",
        "request_id",
        "trace_id",
        "data",
    }
    assert first["actor"]["name"] == "admin"

    # pages: limit 2 walks the same records in the same order
    paged: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/audit", params=params)).json()
        paged.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [r["id"] for r in paged] == [r["id"] for r in everything]

    async def ids(**params: Any) -> list[str]:
        response = await client.get("/v1/audit", params={"limit": 1000, **params})
        assert response.status_code == 200, response.text
        return [r["object_id"] for r in response.json()["data"]]

    transfer_id = moved[1].json()["id"]
    assert await ids(object_id=transfer_id) == [transfer_id]
    assert await ids(action="account.create") == [
        r["object_id"] for r in everything if r["action"] == "account.create"
    ]
    operator_id = by_operator.json()["id"]
    assert await ids(actor="operator-key") == [operator_id]
    key_id = next(r for r in everything if r["object_id"] == operator_id)["actor"]["id"]
    assert await ids(actor=key_id) == [operator_id]
    assert await ids(actor="admin") == [
        r["object_id"] for r in everything if r["actor"]["name"] == "admin"
    ]
    # `from` is inclusive, `to` exclusive; the admin key was made before `started`
    assert await ids(**{"from": started.isoformat()}) == [r["object_id"] for r in everything[1:]]
    assert await ids(to=started.isoformat()) == [everything[0]["object_id"]]
    middle = everything[4]["at"]
    assert await ids(**{"from": middle}) == [r["object_id"] for r in everything[4:]]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"cursor": "not-a-cursor"},
        {"from": "yesterday"},
        {"to": "2026-01-01T00:00:00"},
        {"actor": "x" * 500},
        {"object_id": ""},
    ],
)
async def test_bad_query_parameters_are_validation_errors(
    client: AsyncTestClient[Any], params: dict[str, Any]
) -> None:
    response = await client.get("/v1/audit", params=params)
    assert response.status_code in (400, 422), response.text
    assert response.json()["code"] == "validation_error"


async def test_show_prints_a_transfer_history_a_person_can_read(
    client: AsyncTestClient[Any], db_url: str
) -> None:
    _, a, b = await funded_pair(client, 1_000)
    created = await client.post(
        "/v1/transfers",
        json={
            "debit_account_id": a["id"],
            "credit_account_id": b["id"],
            "amount": 250,
            "pending": True,
        },
        headers={"X-Request-ID": "req-create-1"},
    )
    transfer_id = created.json()["id"]
    posted = await client.post(
        f"/v1/transfers/{transfer_id}/post",
        json={"amount": 200},
        headers={"X-Request-ID": "req-post-2"},
    )
    assert posted.status_code == 200
    reversed_ = await client.post(
        f"/v1/transfers/{transfer_id}/reverse",
        json={"amount": 50},
        headers={"X-Request-ID": "req-reverse-3"},
    )
    assert reversed_.status_code == 201

    shown = run_cli(db_url, "audit", "show", "--object", transfer_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"transfer {transfer_id}: 3 audit record(s)")
    text = shown.stdout
    assert text.index("transfer.create") < text.index("transfer.post") < text.index("reverse")
    assert "req-create-1" in text
    assert "req-post-2" in text
    assert "req-reverse-3" in text
    assert "by admin (key " in text
    assert "state pending" in text  # what the create made
    assert "state: pending -> posted" in text  # what the post changed
    assert "posted_amount: 0 -> 200" in text
    assert f"reversed 50 by transfer {reversed_.json()['id']}" in text

    # the reversal's own history starts with the reverse that made it
    reversal = run_cli(db_url, "audit", "show", "--object", reversed_.json()["id"])
    assert reversal.returncode == 0, reversal.stderr
    assert f"created by reversing transfer {transfer_id}" in reversal.stdout

    as_json = run_cli(db_url, "audit", "show", "--object", a["id"], "--json")
    assert as_json.returncode == 0, as_json.stderr
    [record] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert record["action"] == "account.create"

    unknown = run_cli(db_url, "audit", "show", "--object", "no-such-object")
    assert unknown.returncode == 1
    assert "no audit records for no-such-object" in unknown.stdout
