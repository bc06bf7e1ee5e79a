"""Fuzz every route of the app with hostile values: no 5xx, ever, and a refused request changes
nothing (contract 8.2).

The routes come from the app itself (its OpenAPI document, and `app.routes` for the few it
leaves out), so a new route is fuzzed without an edit here; `tests/fuzz_strategies.py` draws a
whole request for one: path parameters, query string, headers and body, mixing ids that exist
(so requests reach the service, the engine and the database) with hostile values.

Each route gets a fresh database, seeded with accounts, posted and pending transfers and a
reader key, and the real app in-process. For every request:
- the status is below 500, and no response header carries CR, LF or NUL;
- a 4xx is an `application/problem+json` body with its `code` and `status`;
- a 4xx changed nothing: a fingerprint of accounts (balances, versions), transfers, entries,
  voids, audit records and seals, outbox events and API keys is the same before and after.
  (Idempotency-Key rows may keep a refusal for its replay: that is the contract, not a change.)
At the end of each route's run, `ledger verify`'s checks still hold.

Reproducible in CI: the `ci` profile is derandomized (the same examples every run) and keeps no
example database. For a longer, random local run:

    LEDGER_FUZZ_PROFILE=deep .venv/bin/pytest -q -p no:cacheprovider tests/test_fuzz.py

(`LEDGER_FUZZ_EXAMPLES=N` sets the examples per route of either profile.) A failure prints the
shrunk request; pin it as a focused test in tests/test_hostile_values.py.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings

from ledger.app import create_app
from ledger.cli.main import ensure_admin_key
from ledger.core.errors import PROBLEM_MEDIA_TYPE
from ledger.core.settings import Settings
from tests.audit_merkle_helpers import seal_and_checkpoint
from tests.fuzz_strategies import (
    FuzzRequest,
    Known,
    Operation,
    operations,
    plain_path,
    requests_for,
)
from tests.helpers import create_account, transfer, violations

PROFILE = os.environ.get("LEDGER_FUZZ_PROFILE", "ci")
# Examples per route: about 25 routes, the whole module stays well under a minute on two cores.
EXAMPLES_PER_ROUTE = {"ci": 60, "deep": 2_000}
PARAMETERLESS_EXAMPLES_DIVISOR = 6
PARAMETERLESS_EXAMPLES_MIN = 10
# A port, as a real server puts in the ASGI scope (httpx leaves a default port out, and Litestar
# cannot build a URL from an empty Host and a server without a port).
BASE_URL = "http://testserver.local:8000"
REQUEST_DEADLINE_SECONDS = 60  # a request that never answers fails the test instead of hanging
# Tables whose content a refused request must leave exactly as it was.
FINGERPRINTED_TABLES = (
    "accounts",
    "transfers",
    "entries",
    "voided_transfer_ids",
    "audit_records",
    "audit_seals",
    "outbox_events",
    "api_keys",
    "categories",
    "category_accounts",
    "webhook_endpoints",
    "webhook_secrets",
    "webhook_deliveries",
)
_REQUEST_ID = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")
_BAD_HEADER_BYTES = re.compile(rb"[\r\n\x00]")


def fuzz_settings(operation: Operation) -> settings:
    examples = int(os.environ.get("LEDGER_FUZZ_EXAMPLES", EXAMPLES_PER_ROUTE[PROFILE]))
    if not operation.parameters and operation.body_schema is None:
        # Nothing of its own to vary but headers and method, which every other route's run
        # varies too; and some of these pace themselves (/metrics reads the outbox status at
        # most once a second, /ready 5 times a second), so each example may wait that long.
        examples = max(PARAMETERLESS_EXAMPLES_MIN, examples // PARAMETERLESS_EXAMPLES_DIVISOR)
    return settings(
        max_examples=examples,
        derandomize=PROFILE == "ci",
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


def app_routes() -> tuple[list[Operation], str]:
    """The app's routes and where its documentation pages live, read from an app that never
    connects (its engine is lazy)."""
    app = create_app(Settings(database_url="postgresql://fuzz@127.0.0.1:9/none"))
    docs = app.openapi_config.path if app.openapi_config is not None else "/schema"
    return operations(app), docs


OPERATIONS, DOCS_PATH = app_routes()


def fingerprint(db: psycopg.Connection[Any]) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row's text, per table: any change to any column shows."""
    selects = ", ".join(
        f"(SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '')"
        f" FROM {table} t)"
        for table in FINGERPRINTED_TABLES
    )
    row = db.execute(f"SELECT {selects}").fetchone()
    assert row is not None
    out = {}
    for table, value in zip(FINGERPRINTED_TABLES, row, strict=True):
        count, _, digest = str(value).partition(":")
        out[table] = (int(count), digest)
    return out


async def seed(http: httpx.AsyncClient, admin_secret: str) -> Known:
    """Accounts in two currencies, a funded customer, posted and pending transfers and a reader
    key: the ids the fuzz uses so that requests get past 404 into the rules."""
    source = await create_account(http, normal_balance="debit", min_balance=None)
    funded = await create_account(http)
    other = await create_account(http)
    euro = await create_account(http, currency="EUR")
    transfer_ids = []
    pending = {"pending": True, "timeout_seconds": 3600}
    # In this order in the pool: the first, a small posted transfer, is one a reversal can undo
    # (the simplest example of reverse succeeds); the funding one, which cannot be reversed
    # whole once money moved on, comes last.
    for debit, credit, amount, extra in (
        (source, funded, 10_000, {}),
        (funded, other, 100, {}),
        (funded, other, 50, pending),
        (funded, other, 60, pending),
        (funded, other, 70, pending),
    ):
        response = await transfer(http, debit["id"], credit["id"], amount, **extra)
        assert response.status_code == 201, response.text
        transfer_ids.append(response.json()["id"])
    transfer_ids.append(transfer_ids.pop(0))
    key = await http.post("/v1/api-keys", json={"name": "fuzz-reader", "role": "reader"})
    assert key.status_code == 201, key.text
    # An exchange from the funded USD account to the EUR one, through `other` (USD) and a EUR
    # liquidity account with no floor. Kept out of the id pools, so no other route's draws move.
    euro_liquidity = await create_account(http, currency="EUR", min_balance=None)
    exchange = {
        "debit_account_id": funded["id"],
        "credit_account_id": euro["id"],
        "via": {"USD": other["id"], "EUR": euro_liquidity["id"]},
    }
    account_ids = [a["id"] for a in (source, funded, other, euro)]
    etags = []
    for account_id in account_ids:
        response = await http.get(f"/v1/accounts/{account_id}")
        assert response.status_code == 200, response.text
        etags.append(response.headers["etag"])
    category_ids = await seed_categories(http, [a["id"] for a in (funded, other)])
    webhook = await http.post("/v1/webhooks", json={"url": "https://hooks.example/fuzz"})
    assert webhook.status_code == 201, webhook.text
    return Known(
        webhook_ids=[webhook.json()["id"]],
        category_ids=category_ids,
        admin_secret=admin_secret,
        reader_secret=key.json()["secret"],
        account_ids=account_ids,
        transfer_ids=transfer_ids,
        key_ids=[key.json()["id"]],
        etags=etags,
        exchange=exchange,
    )


async def seed_categories(http: httpx.AsyncClient, members: list[str]) -> list[str]:
    """A USD root with a child holding two accounts, so category routes get past their 404s."""
    ids: list[str] = []
    for code in ("fuzz:root", "fuzz:child"):
        body = {"code": code, "currency": "USD", "normal_balance": "credit"}
        response = await http.post(
            "/v1/categories", json={**body, "parent_id": ids[0]} if ids else body
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    for account_id in members:
        response = await http.put(f"/v1/categories/{ids[1]}/accounts/{account_id}")
        assert response.status_code == 201, response.text
    return ids


async def record_ids(http: httpx.AsyncClient) -> list[str]:
    response = await http.get("/v1/audit", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return [record["id"] for record in response.json()["data"]]


async def learn_cursor_kind(http: httpx.AsyncClient, operation: Operation, known: Known) -> None:
    """A list route's own cursor kind, from a page of one: the fuzz then sends cursors that get
    past the kind check to the value inside."""
    if operation.method != "GET" or not any(p.name == "cursor" for p in operation.parameters):
        return
    response = await http.get(plain_path(operation, known), params={"limit": 1})
    cursor = response.json().get("next_cursor") if response.status_code == 200 else None
    if cursor:
        known.cursors.append(cursor)


def check_response(response: httpx.Response, request: FuzzRequest) -> None:
    where = f"{response.status_code} {response.text[:500]!r}\nfor {request.describe()}"
    assert response.status_code < 500, where
    for name, value in response.headers.raw:
        assert not _BAD_HEADER_BYTES.search(name + value), (name, value, where)
    assert _REQUEST_ID.match(response.headers.get("x-request-id", "")), where
    # Litestar's own documentation pages (/schema/...) answer an unknown page with its HTML 404:
    # not our API; they are held to "no 5xx" only.
    docs_page = request.target.startswith(DOCS_PATH) and response.headers.get(
        "content-type", ""
    ).startswith("text/html")
    if response.status_code < 400 or docs_page:
        return
    assert response.headers.get("content-type", "").startswith(PROBLEM_MEDIA_TYPE), where
    problem = response.json()
    assert isinstance(problem, dict), where
    assert isinstance(problem.get("code"), str) and problem["code"], where
    assert problem.get("status") == response.status_code, where


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop of the test's own: hypothesis calls the example function synchronously."""
    event_loop = asyncio.new_event_loop()
    try:
        yield event_loop
    finally:
        event_loop.close()


@pytest.mark.parametrize("operation", OPERATIONS, ids=[o.id for o in OPERATIONS])
def test_no_value_gets_a_5xx_and_a_refused_request_changes_nothing(
    operation: Operation,
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    loop: asyncio.AbstractEventLoop,
) -> None:
    admin_secret = settings.admin_key or ""
    loop.run_until_complete(ensure_admin_key(settings))
    app = create_app(settings)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),  # type: ignore[arg-type]
        base_url=BASE_URL,
    )
    seeded = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),  # type: ignore[arg-type]
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {admin_secret}"},
    )
    statuses: collections.Counter[int] = collections.Counter()

    async def send(request: FuzzRequest) -> httpx.Response:
        return await asyncio.wait_for(
            http.request(
                request.method, request.target, headers=request.headers, content=request.body
            ),
            REQUEST_DEADLINE_SECONDS,
        )

    try:
        known = loop.run_until_complete(seed(seeded, admin_secret))
        # Sealed, with a signed checkpoint: the audit proof routes have a tree to answer from.
        loop.run_until_complete(seal_and_checkpoint(settings))
        known.record_ids = loop.run_until_complete(record_ids(seeded))
        loop.run_until_complete(learn_cursor_kind(seeded, operation, known))

        @fuzz_settings(operation)
        @given(request=requests_for(operation, known))
        def one_request(request: FuzzRequest) -> None:
            before = fingerprint(sync_db)
            response = loop.run_until_complete(send(request))
            statuses[response.status_code] += 1
            check_response(response, request)
            if response.status_code >= 400:
                after = fingerprint(sync_db)
                changed = [t for t in FINGERPRINTED_TABLES if after[t] != before[t]]
                assert not changed, f"{changed} changed by {response.status_code} to {request}"

        one_request()
        assert loop.run_until_complete(violations(settings)) == []
        # A fuzz that only ever met the front door would prove little: something got through.
        assert any(status < 400 for status in statuses) or not operation.documented, statuses
    finally:
        loop.run_until_complete(_close(app, http, seeded))


async def _close(app: Any, *clients: httpx.AsyncClient) -> None:
    for client in clients:
        await client.aclose()
    for hook in app.on_shutdown:
        await hook()
