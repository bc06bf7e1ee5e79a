# Lookalike digits are what some of these tests send:
# ruff: noqa: RUF001
"""Values a hostile or careless client may choose: no 5xx, no lock shared with the service's own
work, and nothing changed by a refused request (contract 8.2)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from ledger.audit.repository import try_lead
from ledger.core.settings import Settings
from ledger.http.pagination import encode_cursor
from outbox.repository import try_relay_lock
from tests.helpers import funded_pair


def count(db: psycopg.Connection[Any], table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("code", "cash\n"),
        ("code", "cash\r\n"),
        ("currency", "USD\n"),
    ],
)
async def test_a_trailing_newline_is_a_validation_error_not_a_500(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any], field: str, value: str
) -> None:
    before = count(sync_db, "accounts")
    body = {"code": "cash", "currency": "USD", "normal_balance": "debit", field: value}
    response = await client.post("/v1/accounts", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert count(sync_db, "accounts") == before
    listed = await client.get("/v1/accounts", params={field: value})
    assert listed.status_code == 422, listed.text


def _id_with_low_bits(bits: int, width: int) -> uuid.UUID:
    high = uuid.uuid4().int >> width << width
    return uuid.UUID(int=high | (bits & ((1 << width) - 1)))


async def test_a_transfer_id_never_shares_a_lock_with_the_relay_or_the_sealer(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """The relay and the sealer hold their session locks all the time. Ids whose bits equal
    those locks' keys, as they are and as they were (one bigint key space shared with transfer
    ids, where such an id waited out the lock timeout and got 503), must go through at once."""
    _source, a, b = await funded_pair(client, 1000)
    engine = create_async_engine(settings.sqlalchemy_url)
    try:
        async with engine.connect() as relay, engine.connect() as sealer:
            assert await try_relay_lock(relay)
            assert await try_lead(sealer, "ledger-sealer:test", 60_000)
            ids = [
                _id_with_low_bits(int.from_bytes(b"ledgrrly", "big") & (2**63 - 1), 64),
                _id_with_low_bits(int.from_bytes(b"ledgseal", "big"), 64),
                *(_id_with_low_bits(bits, 32) for bits in (0, 1, 2, 3, 4)),
            ]
            for transfer_id in ids:
                body = {
                    "id": str(transfer_id),
                    "debit_account_id": a["id"],
                    "credit_account_id": b["id"],
                    "amount": 1,
                }
                response = await client.post("/v1/transfers", json=body)
                assert response.status_code == 201, (transfer_id, response.text)
    finally:
        await engine.dispose()


# -- found by tests/test_fuzz.py ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["req-1\n", "req-1\r\n"])
async def test_an_x_request_id_with_a_trailing_newline_is_replaced_not_echoed(
    client: httpx.AsyncClient, value: str
) -> None:
    """`$` matched before a final newline, so `req-1\\n` was taken as the request id: echoed in
    a response header (a CR/LF there is a broken response under a real server) and written into
    audit records and log lines. It gets a fresh id like any other unusable value."""
    response = await client.get("/health", headers=[(b"x-request-id", value.encode())])
    assert response.status_code == 200, response.text
    echoed = response.headers["x-request-id"]
    assert "\n" not in echoed and "\r" not in echoed
    assert echoed != value.strip()
    kept = await client.get("/health", headers={"X-Request-ID": "req-1"})
    assert kept.headers["x-request-id"] == "req-1"


@pytest.mark.parametrize(
    "if_match", ['"²"'.encode("latin-1"), 'W/"¹"'.encode("latin-1"), '"١"'.encode(), b'"1\n"']
)
async def test_an_if_match_with_a_unicode_digit_is_412_and_changes_nothing(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any], if_match: bytes
) -> None:
    """Headers arrive as Latin-1, where `²` and `¹` are one byte each: `str.isdigit` was true
    for them and `int()` then raised, a 500. An ETag is ASCII digits only."""
    _source, account, _other = await funded_pair(client, 0)
    response = await client.patch(
        f"/v1/accounts/{account['id']}",
        json={"metadata": {"changed": True}},
        headers=[(b"if-match", if_match)],
    )
    assert response.status_code == 412, response.text
    assert response.json()["code"] == "precondition_failed"
    row = sync_db.execute(
        "SELECT version, metadata FROM accounts WHERE id = %s", (account["id"],)
    ).fetchone()
    assert row is not None and row[0] == account["version"] and row[1] == {}


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/v1/accounts/{account}/entries", "entry"),
        ("/v1/audit", "audit"),
        ("/v1/events", "event"),
    ],
)
@pytest.mark.parametrize("value", ["²", "١٢", "１", "7\n"])
async def test_a_cursor_with_unicode_digits_is_422_not_a_500(
    client: httpx.AsyncClient, path: str, kind: str, value: str
) -> None:
    """A sequence cursor holds ASCII digits: `²` passed `isdigit` and then broke `int()` (500),
    `١٢` was read as 12."""
    _source, account, _other = await funded_pair(client, 0)
    response = await client.get(
        path.format(account=account["id"]), params={"cursor": encode_cursor(kind, value)}
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    "body",
    [
        b'{"code":"\xff","currency":"USD","normal_balance":"debit"}',
        b'{"code":"cash","currency":"USD","normal_balance":"debit","metadata":{"k":"\xed\xa0\x80"}}',
        b'{"code":"cash","currency":"USD","normal_balance":"debit","metadata":{"\xc0\xaf":1}}',
    ],
)
async def test_invalid_utf8_inside_a_json_string_is_422_and_creates_nothing(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any], body: bytes
) -> None:
    """msgspec raises UnicodeDecodeError (not a DecodeError) for bad UTF-8 inside a string:
    it went past the body decoder as a 500."""
    before = count(sync_db, "accounts")
    response = await client.post(
        "/v1/accounts", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert count(sync_db, "accounts") == before


@pytest.mark.parametrize("host", [b"ledger:99999", b"ledger:http", b"a:b:c", b"ledger/v2", b"x?y"])
async def test_a_host_header_that_is_no_host_is_422_and_creates_nothing(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any], host: bytes
) -> None:
    """The request's URL is built from Host: a port out of range or not a number made that
    raise, a 500 on every idempotent POST (its key is scoped to the URL's path) and again inside
    the 500 handler, so an empty 500. Litestar refuses a `/` or `?` in Host itself; a bad port
    is refused the same way: 422 validation_error, like every other malformed request here."""
    _source, a, b = await funded_pair(client, 100)
    before = count(sync_db, "transfers")
    response = await client.post(
        "/v1/transfers",
        json={"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 1},
        headers=[(b"host", host), (b"idempotency-key", b"host-key")],
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"
    assert count(sync_db, "transfers") == before
    for fine in (b"ledger.internal:8080", b"127.0.0.1", b"[::1]:8000", b"my_host"):
        ok = await client.get("/health", headers=[(b"host", fine)])
        assert ok.status_code == 200, (fine, ok.text)


async def test_an_unexpected_error_is_a_500_problem_even_when_the_url_cannot_be_built(
    settings: Settings,
) -> None:
    """The last-resort handler read `request.url` for its log line: when that raised too (no
    Host header and no port in the ASGI scope), Litestar answered an empty 500."""
    from litestar import get

    from ledger.app import create_app

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise RuntimeError("boom")

    app = create_app(settings, extra_route_handlers=[boom])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t.local") as http:
            # httpx puts ("t.local", None) in the scope's server: no port to build a URL with.
            response = await http.get("/boom", headers=[(b"host", b"")])
    finally:
        await app.state.engine.dispose()
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "internal_error"


@pytest.mark.parametrize("name", ["ops\n", "ops\r\n", "ops\x7f", "\n"])
async def test_an_api_key_name_with_a_control_character_is_refused(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any], name: str
) -> None:
    before = count(sync_db, "api_keys")
    response = await client.post("/v1/api-keys", json={"name": name, "role": "reader"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert count(sync_db, "api_keys") == before
