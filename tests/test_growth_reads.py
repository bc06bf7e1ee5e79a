"""Reads that stay flat as the ledger grows keep their answers: a filtered transfer page that
moves from its ordered walk to its GIN seek, an account's transfers merged from its two sides,
a statement bounded by instants (ties and exact boundaries), and the plans that make them flat.

Each answer is compared with the plainest statement that could give it (a filter on every row,
sorted), page by page through the cursors."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.dialects import postgresql

from accounts.repository import list_entries_query
from ledger.posting.metadata_query import WALK_ROWS_MIN
from tests.helpers import create_account, funded_pair, transfer
from tests.test_metadata_filters import PLAN_ROWS, plan_nodes
from transfers.repository import list_transfers_query

# Enough transfers that a page of 100 walks WALK_ROWS_MIN of them and still has more after.
ROWS = WALK_ROWS_MIN * 2 + 500


def compiled(query: Any) -> str:
    return str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


def explain(db: psycopg.Connection[Any], query: Any) -> list[dict[str, Any]]:
    [[raw]] = db.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled(query)}").fetchall()
    return plan_nodes((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])


def make_accounts(db: psycopg.Connection[Any], count: int) -> list[uuid.UUID]:
    found = []
    for n in range(count):
        row = db.execute(
            "INSERT INTO accounts (id, code, currency, normal_balance, min_balance, status,"
            " metadata, metadata_text, version, posted_debits, posted_credits, pending_debits,"
            " pending_credits, created_at, updated_at) VALUES (gen_random_uuid(), %s, 'USD',"
            " 'credit', NULL, 'active', '{}', '{}', 1, 0, 0, 0, 0, now(), now()) RETURNING id",
            (f"growth:{uuid.uuid4().hex[:8]}:{n}",),
        ).fetchone()
        assert row is not None
        found.append(row[0])
    return found


def fill(db: psycopg.Connection[Any], rows: int) -> list[uuid.UUID]:
    """`rows` holds whose id order is n's order. By n: the first 5,000 carry `{"k": "sparse"}`
    but one in 1,000 `{"k": "v", "m": "x"}` (a region the walk finds too thin); after that one
    in two carries `{"k": "v"}`, one in six also `"m": "x"`. Accounts: n % 3 picks the pair
    (a->b, b->c, c->a), but one in 1,000 is paid by a quiet fourth; every fifth is posted, the
    rest pending."""
    accounts = make_accounts(db, 4)
    db.execute(
        """
        INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, state,
                               posted_amount, reversed_amount, metadata, metadata_text,
                               created_at, updated_at, created_pending)
        SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
               (%(a)s::uuid[])[CASE WHEN n %% 1000 = 7 THEN 4 ELSE 1 + n %% 3 END],
               (%(a)s::uuid[])[1 + (n + 1) %% 3], 1, 'USD',
               CASE WHEN n %% 5 = 0 THEN 'posted' ELSE 'pending' END,
               CASE WHEN n %% 5 = 0 THEN 1 ELSE 0 END, 0, m::jsonb, m, now(), now(), true
          FROM generate_series(1, %(rows)s) AS n,
               LATERAL (SELECT CASE
                   WHEN n <= 5000 AND n %% 1000 = 0 THEN '{"k": "v", "m": "x"}'
                   WHEN n <= 5000 THEN '{"k": "sparse"}'
                   WHEN n %% 6 = 0 THEN '{"k": "v", "m": "x"}'
                   WHEN n %% 2 = 0 THEN '{"k": "v"}'
                   ELSE '{}' END AS m) AS meta
        """,
        {"a": accounts, "rows": rows},
    )
    db.execute("ANALYZE transfers")
    return accounts


@pytest.fixture
def ledger_rows(sync_db: psycopg.Connection[Any]) -> list[uuid.UUID]:
    return fill(sync_db, ROWS)


@pytest.fixture
def big_ledger(sync_db: psycopg.Connection[Any]) -> list[uuid.UUID]:
    """As many rows as the plan tests of test_metadata_filters: the planner then chooses as it
    would on a real ledger (on a few thousand rows a sequential scan is as good as any)."""
    return fill(sync_db, PLAN_ROWS)


def paged(db: psycopg.Connection[Any], limit: int, **where: Any) -> list[uuid.UUID]:
    """Every id the list's statement answers, page after page from the cursors."""
    found: list[uuid.UUID] = []
    after = None
    while True:
        query = list_transfers_query(after=after, limit=limit, **where)
        page = [row[0] for row in db.execute(compiled(query)).fetchall()]
        found.extend(page)
        if len(page) < limit:
            return found
        after = page[-1]


def plainly(db: psycopg.Connection[Any], where: str, *args: Any) -> list[uuid.UUID]:
    sql = f"SELECT id FROM transfers WHERE {where} ORDER BY id"
    return [row[0] for row in db.execute(sql, args).fetchall()]


@pytest.mark.parametrize("limit", [25, 100, 1000])
def test_filtered_pages_are_every_match_in_order_across_walk_and_seek(
    sync_db: psycopg.Connection[Any], ledger_rows: list[uuid.UUID], limit: int
) -> None:
    """Pages of 25 and 100 start in the thin region (the walk finds 4 matches in 4,096 rows,
    the seek the rest), then fill in their walk; pages of 1,000 walk more rows than the table
    holds. Over one key, two, none matching, with a state, with an account: the pages together
    are exactly the plain answer."""
    _a, b, _c, _quiet = ledger_rows
    k_v = 'metadata @> \'{"k": "v"}\''
    cases: list[tuple[list[tuple[str, str]], uuid.UUID | None, str | None, str]] = [
        ([("k", "v")], None, None, k_v),
        ([("k", "v"), ("m", "x")], None, None, 'metadata @> \'{"k": "v", "m": "x"}\''),
        ([("k", "absent")], None, None, "false"),
        ([("k", "v")], None, "posted", f"{k_v} AND state = 'posted'"),
        ([("k", "v")], b, None, f"{k_v} AND %s IN (debit_account_id, credit_account_id)"),
    ]
    for filters, account, state, where in cases:
        got = paged(sync_db, limit, account_id=account, state=state, metadata=filters)
        assert got == plainly(sync_db, where, *([account] if account else [])), where


@pytest.mark.parametrize("limit", [40, 1000])
def test_an_accounts_transfers_are_both_sides_merged_in_id_order(
    sync_db: psycopg.Connection[Any], ledger_rows: list[uuid.UUID], limit: int
) -> None:
    a, _b, _c, quiet = ledger_rows
    where = "%s IN (debit_account_id, credit_account_id)"
    assert paged(sync_db, limit, account_id=quiet, state=None) == plainly(sync_db, where, quiet)
    assert paged(sync_db, limit, account_id=a, state=None) == plainly(sync_db, where, a)
    posted = paged(sync_db, limit, account_id=a, state="posted")
    assert posted == plainly(sync_db, f"{where} AND state = 'posted'", a)


@pytest.mark.parametrize("with_account", [False, True])
def test_a_filter_half_the_table_matches_reads_a_page_not_the_table(
    sync_db: psycopg.Connection[Any], big_ledger: list[uuid.UUID], with_account: bool
) -> None:
    """Past the thin region, half the rows match: a page of 100 from there reads a few hundred
    rows in id order and never starts the seek (neither its GIN scan nor its search for the
    last walked row, which would read 4,096 rows), also with an account's condition."""
    start = plainly(sync_db, 'metadata @> \'{"k": "v"}\'')[10]
    account = big_ledger[0] if with_account else None
    query = list_transfers_query(
        account_id=account, state=None, after=start, limit=100, metadata=[("k", "v")]
    )
    nodes = explain(sync_db, query)
    assert "Seq Scan" not in [node["Node Type"] for node in nodes]
    walk = [n for n in nodes if n.get("Index Name") == "pk_transfers"]
    assert walk and all(n["Actual Rows"] <= 400 for n in walk), walk
    gin = [n for n in nodes if n.get("Index Name") == "ix_transfers_metadata"]
    assert all(n["Actual Loops"] == 0 for n in gin), gin


def test_an_accounts_page_reads_a_page_from_each_side(
    sync_db: psycopg.Connection[Any], big_ledger: list[uuid.UUID]
) -> None:
    """A quiet account (100 transfers in 100,000): no walk of the table in id order, no
    bitmap of all its transfers sorted; two ordered index reads of a page each."""
    quiet = big_ledger[3]
    query = list_transfers_query(account_id=quiet, state=None, after=None, limit=50)
    nodes = explain(sync_db, query)
    kinds = [node["Node Type"] for node in nodes]
    assert "Seq Scan" not in kinds and "BitmapOr" not in kinds, kinds
    sides = [n for n in nodes if "account_id_id" in n.get("Index Name", "")]
    assert len(sides) == 2 and all(n["Actual Rows"] <= 50 for n in sides), sides


async def test_statement_ranges_keep_ties_and_exact_boundaries(client: httpx.AsyncClient) -> None:
    """Entries posted alone and in batches (a batch's entries may share an instant): for every
    pair of bounds taken from the posted instants themselves, and a microsecond either side,
    the pages of 2 are exactly the statement's entries with from <= posted_at < to."""
    source, a, b = await funded_pair(client, 10_000)
    for round_ in range(3):
        response = await transfer(client, a["id"], b["id"], 1 + round_)
        assert response.status_code == 201, response.text
        items = [
            {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 10 + i}
            for i in range(3)
        ]
        batch = await client.post("/v1/transfers/batch", json={"atomic": True, "transfers": items})
        assert batch.status_code == 200, batch.text
    everything = await statement(client, a["id"], {})
    assert len(everything) == 13
    instants = sorted({dt.datetime.fromisoformat(e["posted_at"]) for e in everything})
    tick = dt.timedelta(microseconds=1)
    bounds = sorted({t + d for t in instants for d in (-tick, dt.timedelta(0), tick)})
    for start in bounds[::2]:
        for end in [*bounds[::3], None]:
            params = {"from": start.isoformat()}
            if end is not None:
                params["to"] = end.isoformat()
            expected = [
                e
                for e in everything
                if start <= dt.datetime.fromisoformat(e["posted_at"])
                and (end is None or dt.datetime.fromisoformat(e["posted_at"]) < end)
            ]
            assert await statement(client, a["id"], params) == expected, params
    assert source["id"] != a["id"]


async def statement(
    client: httpx.AsyncClient, account_id: str, params: dict[str, str]
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page_params = {**params, "limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"/v1/accounts/{account_id}/entries", params=page_params)
        assert response.status_code == 200, response.text
        body = response.json()
        found.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return found


async def test_a_statement_page_from_an_instant_reads_one_page(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    """From the middle of an account's entries, with a cursor and an end: the page's scan reads
    at most `limit` entries in sequence order, whatever lies before the start."""
    _source, a, b = await funded_pair(client, 10_000)
    for i in range(40):
        response = await transfer(client, a["id"], b["id"], 1 + i)
        assert response.status_code == 201, response.text
    everything = await statement(client, a["id"], {})
    middle = dt.datetime.fromisoformat(everything[20]["posted_at"])
    query = list_entries_query(
        uuid.UUID(a["id"]),
        start=middle,
        end=None,
        after_sequence=everything[22]["sequence"],
        limit=5,
    )
    nodes = explain(sync_db, query)
    reads = [n for n in nodes if n.get("Index Name") == "uq_entries_account_id_sequence"]
    assert reads and all(n["Actual Rows"] <= 5 for n in reads), nodes
    assert "Sort" not in [node["Node Type"] for node in nodes]
    rows = sync_db.execute(compiled(query)).fetchall()
    assert [r[0] for r in rows] == [e["sequence"] for e in everything[23:28]]


async def test_an_account_with_no_entry_after_the_start_has_an_empty_statement(
    client: httpx.AsyncClient,
) -> None:
    _source, a, _b = await funded_pair(client, 100)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert await statement(client, a["id"], {"from": later.isoformat()}) == []
    other = await create_account(client)
    assert await statement(client, other["id"], {"to": later.isoformat()}) == []
