"""Problem responses: every error code of the contract reached over HTTP, hostile inputs that
must change nothing, and a lost database (503 with Retry-After, then recovery without restart)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import psycopg
import pytest
from hypothesis import strategies as st

from ledger.cli.main import ensure_admin_key
from ledger.core import limits, migrate
from ledger.core.settings import Settings
from ledger.embedded import EmbeddedPostgres
from tests.helpers import app_client, balances, create_account, funded_pair, transfer

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}

CONTRACT_CODES = {
    (401, "unauthorized"),
    (403, "forbidden"),
    (404, "account_not_found"),
    (409, "account_code_exists"),
    (409, "account_exists_with_different_fields"),
    (409, "transfer_exists_with_different_fields"),
    (409, "transfer_already_voided"),
    (409, "transfer_not_pending"),
    (412, "precondition_failed"),
    (413, "payload_too_large"),
    (422, "validation_error"),
    (422, "same_account"),
    (422, "currency_mismatch"),
    (422, "account_not_active"),
    (422, "insufficient_funds"),
    (422, "amount_overflow"),
    (422, "reversal_exceeds_posted"),
    (422, "idempotency_key_reused"),
    (428, "precondition_required"),
}


def problem(response: httpx.Response) -> tuple[int, str]:
    """Check the RFC 9457 shape and return (status, code)."""
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body = response.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == response.status_code
    assert isinstance(body["title"], str) and isinstance(body["detail"], str)
    assert body["type"].startswith("https://")
    if body["code"] == "validation_error":
        assert isinstance(body["errors"], list)
        assert all(set(e) == {"field", "message"} for e in body["errors"])
    return response.status_code, body["code"]


def snapshot(db: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """Everything a refused request must leave exactly as it was."""
    row = db.execute(
        """SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM transfers),
                  (SELECT count(*) FROM entries), (SELECT count(*) FROM outbox_events),
                  (SELECT count(*) FROM audit_records), (SELECT count(*) FROM idempotency_keys),
                  (SELECT count(*) FROM api_keys), (SELECT count(*) FROM voided_transfer_ids),
                  (SELECT coalesce(sum(version), 0) FROM accounts),
                  (SELECT string_agg(id::text || ':' || posted_debits || ':' || posted_credits
                                     || ':' || status || ':' || coalesce(min_balance, -1),
                                     ',' ORDER BY id) FROM accounts)"""
    ).fetchone()
    assert row is not None
    return tuple(row)


async def test_every_error_code_of_the_contract_over_http(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    seen: set[tuple[int, str]] = set()

    async def expect(response: httpx.Response, status: int, code: str) -> None:
        got = problem(response)
        assert got == (status, code), response.text
        seen.add(got)

    source, a, b = await funded_pair(client, 100)
    eur = await create_account(client, currency="EUR")
    base = str(client.base_url)
    # 401: no key, unknown key, revoked key; 403: a role without the permission
    async with httpx.AsyncClient(transport=client._transport, base_url=base) as anonymous:
        await expect(await anonymous.get("/v1/accounts"), 401, "unauthorized")
        await expect(
            await anonymous.get("/v1/accounts", headers={"Authorization": "Bearer lk_nope"}),
            401,
            "unauthorized",
        )
        reader = (await client.post("/v1/api-keys", json={"name": "r", "role": "reader"})).json()
        as_reader = {"Authorization": f"Bearer {reader['secret']}"}
        await expect(
            await anonymous.post("/v1/accounts", json={}, headers=as_reader), 403, "forbidden"
        )
        assert (await client.delete(f"/v1/api-keys/{reader['id']}")).status_code == 200
        await expect(await anonymous.get("/v1/accounts", headers=as_reader), 401, "unauthorized")
    await expect(await client.get(f"/v1/accounts/{uuid.uuid4()}"), 404, "account_not_found")
    await expect(
        await client.post(
            "/v1/accounts", json={"code": a["code"], "currency": "USD", "normal_balance": "credit"}
        ),
        409,
        "account_code_exists",
    )
    await expect(
        await client.post(
            "/v1/accounts",
            json={"id": a["id"], "code": a["code"], "currency": "EUR", "normal_balance": "credit"},
        ),
        409,
        "account_exists_with_different_fields",
    )
    await expect(await client.post("/v1/accounts", json={"code": "x"}), 422, "validation_error")
    await expect(await transfer(client, a["id"], a["id"], 1), 422, "same_account")
    await expect(await transfer(client, a["id"], eur["id"], 1), 422, "currency_mismatch")
    await expect(await transfer(client, a["id"], b["id"], 101), 422, "insufficient_funds")
    frozen = await client.patch(
        f"/v1/accounts/{b['id']}", json={"status": "frozen"}, headers={"If-Match": '"1"'}
    )
    assert frozen.status_code == 200
    await expect(await transfer(client, a["id"], b["id"], 1), 422, "account_not_active")
    await expect(
        await transfer(client, source["id"], a["id"], limits.AMOUNT_MAX), 422, "amount_overflow"
    )
    transfer_id = str(uuid.uuid4())
    assert (await transfer(client, source["id"], a["id"], 5, id=transfer_id)).status_code == 201
    await expect(
        await transfer(client, source["id"], a["id"], 6, id=transfer_id),
        409,
        "transfer_exists_with_different_fields",
    )
    await expect(
        await client.post(f"/v1/transfers/{transfer_id}/reverse", json={"amount": 6}),
        422,
        "reversal_exceeds_posted",
    )
    voided = str(uuid.uuid4())
    assert (await client.post(f"/v1/transfers/{voided}/void")).status_code == 200
    await expect(
        await transfer(client, source["id"], a["id"], 1, id=voided), 409, "transfer_already_voided"
    )
    await expect(
        await client.post(f"/v1/transfers/{transfer_id}/void"), 409, "transfer_not_pending"
    )
    keyed = {"Idempotency-Key": "key-1"}
    assert (await transfer(client, source["id"], a["id"], 1)).status_code == 201
    first = await client.post(
        "/v1/transfers",
        json={"debit_account_id": source["id"], "credit_account_id": a["id"], "amount": 2},
        headers=keyed,
    )
    assert first.status_code == 201
    await expect(
        await client.post(
            "/v1/transfers",
            json={"debit_account_id": source["id"], "credit_account_id": a["id"], "amount": 3},
            headers=keyed,
        ),
        422,
        "idempotency_key_reused",
    )
    url = f"/v1/accounts/{a['id']}"
    await expect(await client.patch(url, json={"metadata": {}}), 428, "precondition_required")
    await expect(
        await client.patch(url, json={"metadata": {}}, headers={"If-Match": '"1"'}),
        412,
        "precondition_failed",
    )
    await expect(
        await client.post(
            "/v1/transfers",
            content=b'{"x": "' + b"a" * limits.REQUEST_BODY_BYTES_MAX + b'"}',
            headers={"content-type": "application/json"},
        ),
        413,
        "payload_too_large",
    )
    assert seen == CONTRACT_CODES, CONTRACT_CODES - seen


def hostile_requests(a: str, b: str) -> list[tuple[str, str, bytes, dict[str, str], str]]:
    """(method, path, body, extra headers, expected code): none of them may change anything."""
    good = {"debit_account_id": a, "credit_account_id": b, "amount": 1}

    def t(**changes: Any) -> bytes:
        return json.dumps({**good, **changes}).encode()

    def acct(**changes: Any) -> bytes:
        return json.dumps(
            {"code": "hostile", "currency": "USD", "normal_balance": "credit", **changes}
        ).encode()

    deep: Any = 1
    for _ in range(50):
        deep = {"d": deep}
    v = "validation_error"
    transfers = [
        t(amount="1"),
        t(amount=1.0),
        t(amount=1.5),
        t(amount=1e3),
        t(amount=2**63),
        t(amount=2**64 + 5),
        t(amount=-1),
        t(amount=0),
        t(amount=None),
        t(amount=True),
        t(amount=[1]),
        t(debit_account_id="1 OR 1=1"),
        t(debit_account_id="'; DROP TABLE accounts; --"),
        t(credit_account_id=123),
        t(reference="r" * (limits.REFERENCE_LENGTH_MAX + 1)),
        t(reference="a\u0000b"),
        t(metadata={"k": "a\u0000b"}),
        t(metadata={"k\u0000": 1}),
        t(metadata={"big": "x" * (limits.METADATA_BYTES_MAX + 1)}),
        t(metadata=deep),
        t(metadata="not an object"),
        t(pending="yes"),
        t(timeout_seconds=2**63),
        t(timeout_seconds=5),
        t(currency="usd"),
        t(currency="' OR '1'='1"),
        t(unknown_field=1),
        t(id="not-a-uuid"),
        b"",
        b"   ",
        b"not json",
        b"{",
        b"\xff\xfe\x00",
        b"null",
        b"[]",
        b'"string"',
        b"{}",
        b'{"debit_account_id": "' + a.encode() + b'", "amount": 1}',
        b'{"amount": 1, "amount": 2.5}',
        b'{"reference": "\\ud800"}',
    ]
    # nested hundreds or thousands deep: refused, never a stack overflow
    for depth in (600, 1000, 100_000):
        prefix = json.dumps(good)[:-1].encode() + b', "metadata": '
        transfers.append(prefix + b'{"k": ' * depth + b"1" + b"}" * depth + b"}")
        transfers.append(b"[" * depth + b"]" * depth)
    out: list[tuple[str, str, bytes, dict[str, str], str]] = [
        ("POST", "/v1/transfers", body, {}, v) for body in transfers
    ]
    accounts = [
        acct(code="x'; DROP TABLE accounts; --"),
        acct(code="a" * 100_000),
        acct(code=""),
        acct(code="a\u0000"),
        acct(currency="US"),
        acct(currency="A" * 13),
        acct(normal_balance="sideways"),
        acct(min_balance=2**63),
        acct(min_balance=1.5),
        acct(min_balance="0"),
        acct(metadata=[1, 2]),
        acct(status="active"),
        acct(id=12),
    ]
    deep_metadata = b'{"k": ' * 5000 + b"1" + b"}" * 5000
    accounts.append(acct()[:-1] + b', "metadata": ' + deep_metadata + b"}")
    out += [("POST", "/v1/accounts", body, {}, v) for body in accounts]
    out += [
        ("POST", "/v1/accounts", acct()[:-1] + b', "metadata": ' + deep_metadata + b"}", k, v)
        for k in ({"Idempotency-Key": "deep"},)
    ]
    out.append(
        (
            "POST",
            "/v1/transfers/batch",
            b'{"atomic": true, "transfers": ['
            + t()[:-1]
            + b', "metadata": '
            + deep_metadata
            + b"}]}",
            {},
            v,
        )
    )
    out += [
        ("POST", "/v1/transfers", t(), {"Idempotency-Key": "k" * 256}, v),
        ("POST", "/v1/transfers", t(), {"Idempotency-Key": "has space"}, v),
        ("POST", "/v1/transfers", t(), {"Idempotency-Key": ""}, v),
        ("POST", "/v1/transfers/batch", b'{"atomic": "yes", "transfers": []}', {}, v),
        ("POST", "/v1/transfers/batch", b'{"atomic": true, "transfers": {}}', {}, v),
        ("POST", f"/v1/transfers/{uuid.uuid4()}/reverse", b'{"amount": -5}', {}, v),
        ("POST", f"/v1/transfers/{uuid.uuid4()}/reverse", b'{"amount": "5"}', {}, v),
        ("POST", "/v1/api-keys", b'{"name": "n", "role": "root"}', {}, v),
        ("POST", "/v1/api-keys", b'{"name": "", "role": "reader"}', {}, v),
        ("POST", "/v1/api-keys", b'{"name": "a\\u0000", "role": "reader"}', {}, v),
        ("PATCH", f"/v1/accounts/{a}", b'{"status": "deleted"}', {"If-Match": '"2"'}, v),
        ("PATCH", f"/v1/accounts/{a}", b'{"balance": 10}', {"If-Match": '"2"'}, v),
        ("PATCH", f"/v1/accounts/{a}", b"not json", {"If-Match": '"2"'}, v),
        ("PATCH", f"/v1/accounts/{a}", b"{}", {"If-Match": "1; DROP"}, "precondition_failed"),
        (
            "PATCH",
            f"/v1/accounts/{a}",
            b"{}",
            {"If-Match": '"' + "9" * 40 + '"'},
            "precondition_failed",
        ),
        ("GET", "/v1/accounts?code=%00", b"", {}, v),
        ("GET", "/v1/accounts?code=x'%20OR%201=1", b"", {}, v),
        ("GET", "/v1/accounts?currency=" + "A" * 5000, b"", {}, v),
        ("GET", "/v1/accounts?status=%00", b"", {}, v),
        ("GET", "/v1/accounts?limit=1.5", b"", {}, v),
        ("GET", "/v1/accounts?limit=" + "9" * 30, b"", {}, v),
        ("GET", "/v1/accounts?cursor=%00", b"", {}, v),
        ("GET", "/v1/accounts?cursor=" + "A" * 3000, b"", {}, v),
        ("GET", "/v1/transfers?account_id=%27%20OR%201=1", b"", {}, v),
        ("GET", "/v1/transfers?state=%00", b"", {}, v),
        ("GET", f"/v1/accounts/{a}/entries?from=0001-01-01T00:00:00%2B14:00", b"", {}, v),
        ("GET", f"/v1/accounts/{a}/entries?to=9999-12-31T23:59:59-14:00", b"", {}, v),
        ("GET", f"/v1/accounts/{a}/entries?cursor=ZW50cnk6LTE", b"", {}, v),
        ("GET", f"/v1/accounts/{a}/entries?cursor=ZW50cnk6OTk5OTk5OTk5OTk5OTk5OTk5OQ", b"", {}, v),
        ("GET", f"/v1/accounts/{a}/balance?as_of=%00", b"", {}, v),
        ("GET", f"/v1/accounts/{a}/balance?as_of=2026-13-45T99:99:99Z", b"", {}, v),
        ("GET", "/v1/accounts/%27%20OR%201=1", b"", {}, "not_found"),
        ("GET", "/v1/nothing-here", b"", {}, "not_found"),
        ("DELETE", f"/v1/accounts/{a}", b"", {}, "method_not_allowed"),
    ]
    return out


async def test_hostile_inputs_are_refused_and_change_nothing(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 100)
    before = snapshot(sync_db)
    for method, path, body, headers, code in hostile_requests(a["id"], b["id"]):
        response = await client.request(
            method,
            path,
            content=body,
            headers={"content-type": "application/json", **headers},
        )
        assert 400 <= response.status_code < 500, (method, path, body[:80], response.text)
        assert problem(response)[1] == code, (method, path, body[:80], response.text)
    assert snapshot(sync_db) == before
    assert (await balances(client, a["id"]))["posted"] == 100
    # SQL-looking text where text is allowed is stored verbatim, nothing more
    sqlish = "'; DROP TABLE accounts; --"
    stored = await transfer(
        client, a["id"], b["id"], 1, reference=sqlish, metadata={sqlish: sqlish}
    )
    assert stored.status_code == 201, stored.text
    assert (stored.json()["reference"], stored.json()["metadata"]) == (sqlish, {sqlish: sqlish})
    assert len((await client.get("/v1/accounts")).json()["data"]) == 3


@pytest.fixture
def own_postgres() -> Any:
    """A PostgreSQL of this test's own, so that it can be stopped and started again; durable
    (fsync on), since the test crashes it and expects every acknowledged write back."""
    data_dir = Path(tempfile.mkdtemp(prefix="ledger-test-outage-"))
    server = EmbeddedPostgres(data_dir, fast_unsafe=False).start()
    try:
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE ledger")
        migrate.upgrade(server.url("ledger"))
        yield server
    finally:
        server.remove()
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_a_lost_database_is_503_with_retry_after_and_recovers_without_restart(
    own_postgres: EmbeddedPostgres,
) -> None:
    settings = Settings(database_url=own_postgres.url("ledger"), admin_key="lk_outage_admin_key")
    await ensure_admin_key(settings)
    async with app_client(settings) as http:
        account = (
            await http.post(
                "/v1/accounts",
                json={"code": "before", "currency": "USD", "normal_balance": "debit"},
            )
        ).json()
        await asyncio.to_thread(own_postgres.stop, "immediate")
        for method, path, body in (
            ("GET", f"/v1/accounts/{account['id']}", None),
            ("GET", "/v1/accounts", None),
            (
                "POST",
                "/v1/accounts",
                {"code": "down", "currency": "USD", "normal_balance": "debit"},
            ),
            (
                "POST",
                "/v1/transfers",
                {
                    "debit_account_id": account["id"],
                    "credit_account_id": str(uuid.uuid4()),
                    "amount": 1,
                },
            ),
        ):
            response = await http.request(method, path, json=body)
            assert problem(response) == (503, "service_unavailable"), response.text
            assert int(response.headers["retry-after"]) > 0
        assert (await http.get("/ready")).status_code == 503
        assert (await http.get("/health")).status_code == 200
        await asyncio.to_thread(own_postgres.start)
        recovered = await http.get(f"/v1/accounts/{account['id']}")
        assert recovered.status_code == 200, recovered.text
        created = await http.post(
            "/v1/accounts", json={"code": "after", "currency": "USD", "normal_balance": "credit"}
        )
        assert created.status_code == 201, created.text
        assert (await http.get("/ready")).status_code == 200
        codes = sorted(a["code"] for a in (await http.get("/v1/accounts")).json()["data"])
        assert codes == ["after", "before"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def field_values(known: list[str]) -> st.SearchStrategy[Any]:
    """Plausible and implausible values for any field: real ids, edge integers, any JSON."""
    return st.one_of(
        st.sampled_from(known),
        st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, "USD", "EUR", True, "", "\u0000"]),
        json_values,
    )


def test_no_input_gives_a_5xx(db_url: str) -> None:
    """Random bodies, well-formed or not, on every write endpoint: always a 2xx or a 4xx."""
    loop = asyncio.new_event_loop()
    settings = Settings(database_url=db_url, admin_key="lk_fuzz_admin_key_0123456789")
    stack = contextlib.AsyncExitStack()

    async def setup() -> tuple[httpx.AsyncClient, list[str]]:
        await ensure_admin_key(settings)
        http = await stack.enter_async_context(app_client(settings))
        _source, a, b = await funded_pair(http, 1000)
        moved = (await transfer(http, a["id"], b["id"], 10)).json()
        return http, [a["id"], b["id"], moved["id"], str(uuid.uuid4())]

    try:
        http, known = loop.run_until_complete(setup())
        values = field_values(known)
        transfer_fields = st.fixed_dictionaries(
            {},
            optional={
                name: values
                for name in (
                    "id",
                    "debit_account_id",
                    "credit_account_id",
                    "amount",
                    "currency",
                    "pending",
                    "timeout_seconds",
                    "reference",
                    "metadata",
                )
            },
        )
        account_fields = st.fixed_dictionaries(
            {},
            optional={
                name: values
                for name in ("id", "code", "currency", "normal_balance", "min_balance", "metadata")
            },
        )
        batches = st.fixed_dictionaries(
            {"atomic": st.booleans()}, optional={"transfers": st.lists(transfer_fields, max_size=3)}
        )
        bodies = st.one_of(json_values, transfer_fields, account_fields, batches)
        routes = st.sampled_from(
            [
                ("POST", "/v1/transfers"),
                ("POST", "/v1/transfers/batch"),
                ("POST", "/v1/accounts"),
                ("POST", f"/v1/transfers/{known[2]}/reverse"),
                ("POST", f"/v1/transfers/{known[2]}/post"),
                ("POST", f"/v1/transfers/{known[3]}/void"),
                ("POST", "/v1/api-keys"),
                ("PATCH", f"/v1/accounts/{known[0]}"),
            ]
        )

        @hypothesis.settings(max_examples=150, deadline=None, derandomize=True, database=None)
        @hypothesis.given(route=routes, body=bodies, key=st.sampled_from([None, "fuzz-key"]))
        def check(route: tuple[str, str], body: Any, key: str | None) -> None:
            method, path = route
            headers = {"content-type": "application/json", "If-Match": '"2"'}
            if key is not None:
                headers["Idempotency-Key"] = key
            response = loop.run_until_complete(
                http.request(method, path, content=json.dumps(body), headers=headers)
            )
            assert response.status_code < 500, (method, path, body, response.text)

        check()
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
