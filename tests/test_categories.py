"""Account categories: create, read, list, move, metadata, membership, refusals (cycles,
currencies), rolled-up balances signed by the category's normal balance, and for every change
one event (subject the category, sequence its version) and one audit record."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers import app_client, create_account, funded_pair, transfer
from tests.stored_events import ENVELOPE_COLUMNS, envelope
from tests.test_api_accounts import assert_problem


async def new_category(
    client: httpx.AsyncClient,
    *,
    normal_balance: str = "credit",
    currency: str = "USD",
    parent_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "code": f"cat:{uuid.uuid4().hex[:12]}",
        "currency": currency,
        "normal_balance": normal_balance,
        **({"parent_id": parent_id} if parent_id else {}),
        **extra,
    }
    response = await client.post("/v1/categories", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def add(client: httpx.AsyncClient, category: dict[str, Any], account: dict[str, Any]) -> int:
    response = await client.put(f"/v1/categories/{category['id']}/accounts/{account['id']}")
    assert response.status_code in (200, 201), response.text
    return response.status_code


async def balance(client: httpx.AsyncClient, category: dict[str, Any], **query: Any) -> Any:
    response = await client.get(f"/v1/categories/{category['id']}/balance", params=query)
    assert response.status_code == 200, response.text
    return response.json()


async def test_create_get_list_and_retries(client: httpx.AsyncClient) -> None:
    root = await new_category(client, metadata={"n": 1e23})
    assert (root["version"], root["parent_id"], root["metadata"]) == (1, None, {"n": 1e23})
    child = await new_category(client, parent_id=root["id"], normal_balance="debit")
    read = await client.get(f"/v1/categories/{child['id']}")
    assert read.status_code == 200 and read.json() == child
    listed = await client.get("/v1/categories", params={"parent_id": root["id"]})
    assert [c["id"] for c in listed.json()["data"]] == [child["id"]]
    every = await client.get("/v1/categories", params={"limit": 1})
    assert len(every.json()["data"]) == 1 and every.json()["next_cursor"]
    same = {k: child[k] for k in ("id", "code", "currency", "normal_balance", "parent_id")}
    again = await client.post("/v1/categories", json=same)
    assert again.status_code == 200 and again.json() == child
    other = await client.post("/v1/categories", json={**same, "normal_balance": "credit"})
    assert_problem(other, 409, "category_exists_with_different_fields")
    taken = await client.post("/v1/categories", json={**same, "id": str(uuid.uuid4())})
    assert_problem(taken, 409, "category_code_exists")
    orphan = {**same, "id": str(uuid.uuid4()), "code": "cat:orphan", "parent_id": str(uuid.uuid4())}
    assert_problem(await client.post("/v1/categories", json=orphan), 404, "category_not_found")
    euro = {**orphan, "currency": "EUR", "parent_id": root["id"]}
    assert_problem(await client.post("/v1/categories", json=euro), 422, "currency_mismatch")
    assert_problem(await client.get(f"/v1/categories/{uuid.uuid4()}"), 404, "category_not_found")


async def test_moves_refuse_cycles_and_other_currencies(client: httpx.AsyncClient) -> None:
    root = await new_category(client)
    child = await new_category(client, parent_id=root["id"])
    grandchild = await new_category(client, parent_id=child["id"])
    path = f"/v1/categories/{root['id']}"
    for parent in (root, child, grandchild):
        refused = await client.patch(path, json={"parent_id": parent["id"]})
        assert_problem(refused, 422, "category_cycle")
    euro = await new_category(client, currency="EUR")
    assert_problem(
        await client.patch(path, json={"parent_id": euro["id"]}), 422, "currency_mismatch"
    )
    assert (await client.get(path)).json() == root  # nothing changed
    moved = await client.patch(
        f"/v1/categories/{grandchild['id']}", json={"parent_id": None, "metadata": {"k": "v"}}
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["parent_id"], moved.json()["metadata"]) == (None, {"k": "v"})
    assert moved.json()["version"] == 2
    # now free of root's subtree, root may go under it
    under = await client.patch(path, json={"parent_id": grandchild["id"]})
    assert under.status_code == 200 and under.json()["parent_id"] == grandchild["id"]
    unchanged = await client.patch(path, json={})
    assert unchanged.json()["version"] == under.json()["version"]


async def test_membership_put_delete_and_currency(client: httpx.AsyncClient) -> None:
    category = await new_category(client)
    account = await create_account(client)
    assert await add(client, category, account) == 201
    assert await add(client, category, account) == 200  # already in: nothing written
    assert (await client.get(f"/v1/categories/{category['id']}")).json()["version"] == 2
    euro = await create_account(client, currency="EUR")
    path = f"/v1/categories/{category['id']}/accounts"
    assert_problem(await client.put(f"{path}/{euro['id']}"), 422, "currency_mismatch")
    assert_problem(await client.put(f"{path}/{uuid.uuid4()}"), 404, "account_not_found")
    assert_problem(
        await client.put(f"/v1/categories/{uuid.uuid4()}/accounts/{account['id']}"),
        404,
        "category_not_found",
    )
    removed = await client.delete(f"{path}/{account['id']}")
    assert removed.status_code == 200 and removed.json()["category_version"] == 3
    assert_problem(
        await client.delete(f"{path}/{account['id']}"), 404, "category_membership_not_found"
    )


async def test_balance_rolls_up_descendants_signed_by_the_categorys_normal_balance(
    client: httpx.AsyncClient,
) -> None:
    source, a, b = await funded_pair(client, 1000)  # source debit-normal, a and b credit-normal
    assert (await transfer(client, a["id"], b["id"], 300)).status_code == 201
    held = await transfer(client, a["id"], b["id"], 100, pending=True)
    assert held.status_code == 201
    liabilities = await new_category(client, normal_balance="credit")
    customers = await new_category(client, parent_id=liabilities["id"], normal_balance="credit")
    await add(client, customers, a)
    await add(client, customers, b)
    await add(client, liabilities, a)  # in two categories of the tree: counted once
    await add(client, liabilities, source)  # opposite normal balance: counts negatively
    top = await balance(client, liabilities)
    # a: posted 700 available 600; b: posted 300 available 300; source: posted 1000 (debit)
    assert top["accounts"] == 3
    assert top["balances"] == {
        "posted": 700 + 300 - 1000,
        "available": 600 + 300 - 1000,
        "posted_debits": 300 + 1000,
        "posted_credits": 1000 + 300,
        "pending_debits": 100,
        "pending_credits": 100,
    }
    inner = await balance(client, customers)
    assert (inner["accounts"], inner["balances"]["posted"]) == (2, 1000)
    mirrored = await new_category(client, normal_balance="debit")
    await add(client, mirrored, a)
    await add(client, mirrored, b)
    assert (await balance(client, mirrored))["balances"]["posted"] == -1000
    # as of an instant before the 300 moved: a held 1000, b nothing
    first = await client.get(f"/v1/accounts/{a['id']}/entries")
    funded_at = first.json()["data"][0]["posted_at"]
    past = await balance(client, customers, as_of=funded_at)
    assert past["balances"]["posted"] == 1000 and past["balances"]["available"] is None
    bad = await client.get(f"/v1/categories/{customers['id']}/balance", params={"as_of": "x"})
    assert_problem(bad, 422, "validation_error")


async def test_every_change_has_its_event_and_audit_record(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    parent = await new_category(client)
    category = await new_category(client)
    account = await create_account(client)
    await client.patch(f"/v1/categories/{category['id']}", json={"parent_id": parent["id"]})
    await add(client, category, account)
    await add(client, category, account)  # no change: no event, no record
    await client.delete(f"/v1/categories/{category['id']}/accounts/{account['id']}")
    events = [
        (t, s, envelope(text, packed)["data"])
        for t, s, text, packed in sync_db.execute(
            f"SELECT type, sequence, {ENVELOPE_COLUMNS} FROM outbox_events e"
            " WHERE subject = %s ORDER BY id",
            (category["id"],),
        )
    ]
    assert [(t, s) for t, s, _ in events] == [
        ("ledger.category.created", 1),
        ("ledger.category.updated", 2),
        ("ledger.category.account_added", 3),
        ("ledger.category.account_removed", 4),
    ]
    assert events[1][2]["parent_id"] == parent["id"]
    assert events[2][2] == {
        "category_id": category["id"],
        "account_id": account["id"],
        "version": 3,
    }
    actions = sync_db.execute(
        "SELECT action FROM audit_records WHERE object_id = %s ORDER BY at, id",
        (category["id"],),
    ).fetchall()
    assert [a for (a,) in actions] == [
        "category.create",
        "category.update",
        "category.add_account",
        "category.remove_account",
    ]


async def test_roles_readers_read_and_only_writers_write(
    client: httpx.AsyncClient, settings: Any
) -> None:
    category = await new_category(client)
    made = await client.post("/v1/api-keys", json={"name": "r", "role": "reader"})
    assert made.status_code == 201, made.text
    async with app_client(settings, made.json()["secret"]) as reader:
        assert (await reader.get(f"/v1/categories/{category['id']}")).status_code == 200
        assert (await reader.get(f"/v1/categories/{category['id']}/balance")).status_code == 200
        ok = await reader.get("/v1/reports/trial-balance", params={"currency": "USD"})
        assert ok.status_code == 200
        body = {"code": "cat:no", "currency": "USD", "normal_balance": "credit"}
        assert_problem(await reader.post("/v1/categories", json=body), 403, "forbidden")
        patched = await reader.patch(f"/v1/categories/{category['id']}", json={})
        assert_problem(patched, 403, "forbidden")


def test_the_database_refuses_a_cycle_and_a_foreign_account(
    sync_db: psycopg.Connection[Any],
) -> None:
    """Behind the service's back, the triggers hold the same rules."""
    a, b = uuid.uuid4(), uuid.uuid4()
    for category_id, parent in ((a, None), (b, a)):
        sync_db.execute(
            "INSERT INTO categories VALUES"
            " (%s, %s, 'USD', 'credit', %s, '{}', '{}', 1, now(), now())",
            (category_id, f"db:{category_id.hex[:8]}", parent),
        )
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        sync_db.execute("UPDATE categories SET parent_id = %s WHERE id = %s", (b, a))
    euro = uuid.uuid4()
    sync_db.execute(
        "INSERT INTO accounts (id, code, currency, normal_balance, min_balance, status, metadata,"
        " metadata_text, version, posted_debits, posted_credits, pending_debits,"
        " pending_credits, created_at, updated_at) VALUES (%s, %s, 'EUR', 'credit', 0,"
        " 'active', '{}', '{}', 1, 0, 0, 0, 0, now(), now())",
        (euro, f"db:{euro.hex[:8]}"),
    )
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        sync_db.execute("INSERT INTO category_accounts VALUES (%s, %s, now())", (a, euro))


async def test_verify_names_a_cycle_and_a_foreign_member_made_behind_the_triggers(
    client: httpx.AsyncClient, settings: Any, sync_db: psycopg.Connection[Any]
) -> None:
    from tests.helpers import violations

    root = await new_category(client)
    child = await new_category(client, parent_id=root["id"])
    euro = await create_account(client, currency="EUR")
    assert await violations(settings) == []
    sync_db.execute("ALTER TABLE categories DISABLE TRIGGER categories_guard")
    sync_db.execute("ALTER TABLE category_accounts DISABLE TRIGGER category_accounts_guard")
    sync_db.execute("UPDATE categories SET parent_id = %s WHERE id = %s", (child["id"], root["id"]))
    sync_db.execute(
        "INSERT INTO category_accounts VALUES (%s, %s, now())", (child["id"], euro["id"])
    )
    found = await violations(settings)
    rules = sorted(line.split(":")[0] for line in found)
    assert rules == [
        "account in a category of another currency",
        "category is its own ancestor",
        "category is its own ancestor",
    ], found
