"""`metadata[KEY]=VALUE` filters on the account and transfer lists: exact string equality on
top-level members, all pairs at once, pages that stay correct, bad syntax refused with its own
code, and a plan on 100,000 rows that uses the GIN index (a sequential scan fails the test)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.dialects import postgresql

from accounts.repository import list_accounts_query
from tests.helpers import create_account, funded_pair, transfer
from tests.test_api_accounts import assert_problem
from transfers.repository import list_transfers_query

PLAN_ROWS = 100_000


async def ids(client: httpx.AsyncClient, path: str, params: Any) -> list[str]:
    """Every id the list answers, page by page (limit 2, so filters meet cursors)."""
    found: list[str] = []
    cursor = None
    while True:
        page_params = [*params, ("limit", "2"), *([("cursor", cursor)] if cursor else [])]
        response = await client.get(path, params=page_params)
        assert response.status_code == 200, response.text
        body = response.json()
        found.extend(item["id"] for item in body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return found


async def test_account_filters_match_strings_on_top_level_members_all_at_once(
    client: httpx.AsyncClient,
) -> None:
    made = {}
    for name, metadata in {
        "eu_gold": {"region": "eu", "tier": "gold"},
        "eu_gold_2": {"region": "eu", "tier": "gold", "extra": "x"},
        "eu_silver": {"region": "eu", "tier": "silver"},
        "us_gold": {"region": "us", "tier": "gold"},
        "number": {"region": 1},
        "nested": {"deep": {"region": "eu"}},
        "eu_gold_3": {"tier": "gold", "region": "eu"},
    }.items():
        made[name] = (await create_account(client, metadata=metadata))["id"]
    path = "/v1/accounts"
    eu_gold = sorted(made[n] for n in ("eu_gold", "eu_gold_2", "eu_gold_3"))
    both = [("metadata[region]", "eu"), ("metadata[tier]", "gold")]
    assert await ids(client, path, both) == eu_gold
    eu = sorted(made[n] for n in ("eu_gold", "eu_gold_2", "eu_silver", "eu_gold_3"))
    assert await ids(client, path, [("metadata[region]", "eu")]) == eu
    # string equality: the number 1 is not "1", a nested member is not a top-level one
    assert await ids(client, path, [("metadata[region]", "1")]) == []
    # the same key twice must match both: nothing does
    twice = [("metadata[region]", "eu"), ("metadata[region]", "us")]
    assert await ids(client, path, twice) == []
    # a key with quotes and brackets-free punctuation is data, not syntax
    odd = await create_account(client, metadata={'a"b\\c': "v'1"})
    assert await ids(client, path, [('metadata[a"b\\c]', "v'1")]) == [odd["id"]]


async def test_transfer_filters_and_other_filters_together(client: httpx.AsyncClient) -> None:
    _source, a, b = await funded_pair(client, 1000)
    wanted = []
    for i in range(5):
        metadata = {"order": "o-1" if i % 2 == 0 else "o-2", "i": str(i)}
        response = await transfer(client, a["id"], b["id"], 10, metadata=metadata)
        assert response.status_code == 201, response.text
        if i % 2 == 0:
            wanted.append(response.json()["id"])
    path = "/v1/transfers"
    assert await ids(client, path, [("metadata[order]", "o-1")]) == sorted(wanted)
    with_account = [("metadata[order]", "o-1"), ("account_id", b["id"])]
    assert await ids(client, path, with_account) == sorted(wanted)
    assert await ids(client, path, [("metadata[order]", "o-1"), ("state", "pending")]) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("metadata", "x"),
        ("metadata[]", "x"),
        ("metadata[a][b]", "x"),
        ("metadata[a", "x"),
        ("metadata[a]x", "x"),
        ("metadata[a]", "with\x00nul"),
        ("metadata[a\nb]", "x"),
        ("metadata[a]", "v" * 1025),
    ],
)
async def test_bad_filter_syntax_is_a_422_with_its_own_code(
    client: httpx.AsyncClient, name: str, value: str
) -> None:
    for path in ("/v1/accounts", "/v1/transfers"):
        response = await client.get(path, params=[(name, value)])
        assert_problem(response, 422, "invalid_metadata_filter")


async def test_too_many_filters_are_refused(client: httpx.AsyncClient) -> None:
    params = [(f"metadata[k{i}]", "v") for i in range(17)]
    assert_problem(await client.get("/v1/accounts", params=params), 422, "invalid_metadata_filter")
    ok = await client.get("/v1/accounts", params=params[:16])
    assert ok.status_code == 200 and ok.json()["data"] == []


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


def gin_plan(db: psycopg.Connection[Any], query: Any, index: str) -> list[Any]:
    """EXPLAIN the statement (compiled as sent, values inline): no node may scan a table
    sequentially and `index` must be used. Returns the statement's rows."""
    sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    [[raw]] = db.execute(f"EXPLAIN (FORMAT JSON) {sql}").fetchall()
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    nodes = plan_nodes(plan)
    kinds = [node["Node Type"] for node in nodes]
    assert "Seq Scan" not in kinds, kinds
    assert any(node.get("Index Name") == index for node in nodes), kinds
    return db.execute(sql).fetchall()


def test_account_filter_plan_on_100000_rows_uses_the_gin_index(
    sync_db: psycopg.Connection[Any],
) -> None:
    """The list's own statement (compiled from the repository), EXPLAINed on 100,000 accounts of
    which 50 match: no node may scan the table sequentially, and the GIN index must be used."""
    sync_db.execute(
        """
        INSERT INTO accounts (id, code, currency, normal_balance, min_balance, status, metadata,
                              metadata_text, version, posted_debits, posted_credits,
                              pending_debits, pending_credits, created_at, updated_at)
        SELECT gen_random_uuid(), 'plan:' || n, 'USD', 'credit', 0, 'active', m::jsonb, m, 1,
               0, 0, 0, 0, now(), now()
          FROM generate_series(1, %s) AS n,
               LATERAL (SELECT json_build_object('shard', (n %% 2000)::text,
                                                 'batch', 'b' || (n %% 7))::text AS m) AS meta
        """,
        (PLAN_ROWS,),
    )
    sync_db.execute("ANALYZE accounts")
    query = list_accounts_query(
        code=None,
        currency=None,
        status=None,
        after=None,
        limit=100,
        metadata=[("shard", "17")],
    )
    assert len(gin_plan(sync_db, query, "ix_accounts_metadata")) == 50


def test_transfer_filter_plan_on_100000_rows_uses_the_gin_index(
    sync_db: psycopg.Connection[Any],
) -> None:
    """The same for transfers: 100,000 holds between two accounts, 50 of them matching."""
    accounts = []
    for n in range(2):
        account_id = sync_db.execute(
            "INSERT INTO accounts (id, code, currency, normal_balance, min_balance, status,"
            " metadata, metadata_text, version, posted_debits, posted_credits, pending_debits,"
            " pending_credits, created_at, updated_at) VALUES (gen_random_uuid(), %s, 'USD',"
            " 'credit', NULL, 'active', '{}', '{}', 1, 0, 0, 0, 0, now(), now()) RETURNING id",
            (f"plan:t{n}",),
        ).fetchone()
        assert account_id is not None
        accounts.append(account_id[0])
    sync_db.execute(
        """
        INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, state,
                               posted_amount, reversed_amount, metadata, metadata_text,
                               created_at, updated_at, created_pending)
        SELECT gen_random_uuid(), %s, %s, 1, 'USD', 'pending', 0, 0, m::jsonb, m, now(), now(),
               true
          FROM generate_series(1, %s) AS n,
               LATERAL (SELECT json_build_object('order', 'o-' || (n %% 2000))::text AS m) AS meta
        """,
        (accounts[0], accounts[1], PLAN_ROWS),
    )
    sync_db.execute("ANALYZE transfers")
    query = list_transfers_query(
        account_id=None, state=None, after=None, limit=100, metadata=[("order", "o-17")]
    )
    assert len(gin_plan(sync_db, query, "ix_transfers_metadata")) == 50
