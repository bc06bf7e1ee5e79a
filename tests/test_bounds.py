"""Every bound a client can grow is stated and enforced (contract 9.1): past it, 422 with the
bound's own code, nothing written, never a 500. Monitors per account and category levels are
tried at their real bounds; the larger counts (children, members, memberships) with the bound
lowered for the test, through the same code path."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest

from ledger.core import limits
from tests.helpers import create_account


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text


async def category(
    client: httpx.AsyncClient, parent_id: str | None = None, currency: str = "USD"
) -> httpx.Response:
    body: dict[str, Any] = {
        "code": f"cat:{uuid.uuid4().hex[:16]}",
        "currency": currency,
        "normal_balance": "debit",
    }
    if parent_id is not None:
        body["parent_id"] = parent_id
    return await client.post("/v1/categories", json=body)


def count(db: psycopg.Connection[Any], sql: str, *args: Any) -> int:
    row = db.execute(sql, args).fetchone()
    assert row is not None
    return int(row[0])


async def test_an_account_has_at_most_its_bound_of_monitors(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    account = await create_account(client)
    path = f"/v1/accounts/{account['id']}/monitors"
    body = {"field": "posted", "operator": "gt", "value": 0}
    made = [await client.post(path, json=body) for _ in range(limits.MONITORS_PER_ACCOUNT_MAX)]
    assert {r.status_code for r in made} == {201}
    assert_problem(await client.post(path, json=body), 422, "monitor_limit_reached")
    in_db = "SELECT count(*) FROM account_monitors WHERE account_id = %s"
    assert count(sync_db, in_db, account["id"]) == limits.MONITORS_PER_ACCOUNT_MAX
    # One deleted makes room for one.
    assert (await client.delete(f"{path}/{made[0].json()['id']}")).status_code == 200
    assert (await client.post(path, json=body)).status_code == 201
    assert_problem(await client.post(path, json=body), 422, "monitor_limit_reached")
    # Behind the service's back, the database refuses the same.
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        sync_db.execute(
            "INSERT INTO account_monitors (id, account_id, field, operator, value, "
            "trigger_count, created_at) VALUES (gen_random_uuid(), %s, 'posted', 'gt', 0, 0, "
            "now())",
            [account["id"]],
        )


async def test_a_category_tree_is_at_most_its_bound_of_levels_deep(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    chain: list[str] = []
    for _ in range(limits.CATEGORY_LEVELS_MAX):
        made = await category(client, chain[-1] if chain else None)
        assert made.status_code == 201, made.text
        chain.append(made.json()["id"])
    assert_problem(await category(client, chain[-1]), 422, "category_too_deep")
    # A subtree two levels high fits under level 98, not under level 99.
    top = (await category(client)).json()["id"]
    assert (await category(client, top)).status_code == 201
    move = {"parent_id": chain[-3]}
    assert (await client.patch(f"/v1/categories/{top}", json=move)).status_code == 200
    deeper = {"parent_id": chain[-2]}
    assert_problem(
        await client.patch(f"/v1/categories/{top}", json=deeper), 422, "category_too_deep"
    )
    # The deepest category's balance reads its whole ancestry's subtree: no 500.
    assert (await client.get(f"/v1/categories/{chain[0]}/balance")).status_code == 200
    # Behind the service's back, the database refuses the 101st level.
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        sync_db.execute(
            "INSERT INTO categories (id, code, currency, normal_balance, parent_id, metadata, "
            "metadata_text, version, created_at, updated_at) VALUES (gen_random_uuid(), "
            "'too:deep', 'USD', 'debit', %s, '{}', '{}', 1, now(), now())",
            [chain[-1]],
        )


async def test_children_members_and_memberships_are_bounded(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "CATEGORY_CHILDREN_MAX", 3)
    monkeypatch.setattr(limits, "CATEGORY_ACCOUNTS_MAX", 2)
    monkeypatch.setattr(limits, "ACCOUNT_CATEGORIES_MAX", 2)
    parent = (await category(client)).json()["id"]
    for _ in range(3):
        assert (await category(client, parent)).status_code == 201
    assert_problem(await category(client, parent), 422, "category_children_limit_reached")
    loose = (await category(client)).json()["id"]
    move = {"parent_id": parent}
    assert_problem(
        await client.patch(f"/v1/categories/{loose}", json=move),
        422,
        "category_children_limit_reached",
    )

    accounts = [(await create_account(client))["id"] for _ in range(3)]
    full = (await category(client)).json()["id"]
    for account_id in accounts[:2]:
        assert (await client.put(f"/v1/categories/{full}/accounts/{account_id}")).status_code == 201
    assert_problem(
        await client.put(f"/v1/categories/{full}/accounts/{accounts[2]}"),
        422,
        "category_accounts_limit_reached",
    )
    # A member already in is no new member: its PUT is still a 200.
    again = await client.put(f"/v1/categories/{full}/accounts/{accounts[0]}")
    assert again.status_code == 200, again.text

    other = (await category(client)).json()["id"]
    assert (await client.put(f"/v1/categories/{other}/accounts/{accounts[0]}")).status_code == 201
    third = (await category(client)).json()["id"]
    assert_problem(
        await client.put(f"/v1/categories/{third}/accounts/{accounts[0]}"),
        422,
        "account_categories_limit_reached",
    )
