"""API keys: roles and their permissions, 401/403, secrets hashed at rest and shown once, the
LEDGER_ADMIN_KEY bootstrap."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg

from ledger.cli.main import ensure_admin_key
from ledger.core.settings import Settings
from tests.helpers import funded_pair
from tests.test_errors import problem


async def new_key(client: httpx.AsyncClient, role: str) -> dict[str, Any]:
    response = await client.post("/v1/api-keys", json={"name": f"{role}-key", "role": role})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def as_key(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_create_shows_the_secret_once_and_stores_only_its_hash(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    key = await new_key(client, "reader")
    assert set(key) >= {"id", "name", "role", "created_at", "secret"}
    assert (key["name"], key["role"]) == ("reader-key", "reader")
    secret = key["secret"]
    assert len(secret) >= 32
    listed = (await client.get("/v1/api-keys")).json()
    assert key["id"] in [k["id"] for k in listed["data"]]
    assert all("secret" not in k and "secret_hash" not in k for k in listed["data"])
    assert secret not in (await client.get("/v1/api-keys")).text
    stored = sync_db.execute(
        "SELECT secret_hash FROM api_keys WHERE id = %s", (key["id"],)
    ).fetchone()
    assert stored is not None and secret not in stored[0] and len(stored[0]) == 64
    # the secret is nowhere in the database: not in any table, audit and events included
    for table in ("api_keys", "audit_records", "outbox_events", "idempotency_keys"):
        dump = sync_db.execute(f"SELECT coalesce(string_agg(t::text, ''), '') FROM {table} t")
        row = dump.fetchone()
        assert row is not None and secret not in row[0], table


async def test_roles_and_their_permissions(client: httpx.AsyncClient) -> None:
    _source, a, b = await funded_pair(client, 100)
    keys = {role: await new_key(client, role) for role in ("operator", "reader", "auditor")}
    account_body = {"currency": "USD", "normal_balance": "credit"}
    transfer_body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 1}
    reads = [f"/v1/accounts/{a['id']}", "/v1/accounts", "/v1/transfers"]
    expected_writes = {"operator": True, "reader": False, "auditor": False}
    for role, key in keys.items():
        headers = as_key(key["secret"])
        for path in reads:
            assert (await client.get(path, headers=headers)).status_code == 200, (role, path)
        created = await client.post(
            "/v1/accounts", json={**account_body, "code": f"by-{role}"}, headers=headers
        )
        moved = await client.post("/v1/transfers", json=transfer_body, headers=headers)
        if expected_writes[role]:
            assert (created.status_code, moved.status_code) == (201, 201), role
        else:
            assert problem(created) == (403, "forbidden"), role
            assert problem(moved) == (403, "forbidden"), role
        # only admins manage keys
        listed = await client.get("/v1/api-keys", headers=headers)
        assert problem(listed) == (403, "forbidden"), role
        made = await client.post(
            "/v1/api-keys", json={"name": "x", "role": "admin"}, headers=headers
        )
        assert problem(made) == (403, "forbidden"), role
    operator = as_key(keys["operator"]["secret"])
    etag = (await client.get(f"/v1/accounts/{a['id']}", headers=operator)).headers["etag"]
    patched = await client.patch(
        f"/v1/accounts/{a['id']}",
        json={"metadata": {"by": "op"}},
        headers=operator | {"If-Match": etag},
    )
    assert patched.status_code == 200, patched.text
    reversed_ = await client.post(
        f"/v1/transfers/{(await client.get('/v1/transfers')).json()['data'][0]['id']}/reverse",
        json={"amount": 1},
        headers=operator,
    )
    assert reversed_.status_code == 201, reversed_.text


async def test_unknown_missing_malformed_and_revoked_keys_are_401(
    client: httpx.AsyncClient,
) -> None:
    key = await new_key(client, "operator")
    async with httpx.AsyncClient(
        transport=client._transport, base_url=str(client.base_url)
    ) as anonymous:
        for headers in (
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer "},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": f"Token {key['secret']}"},
            as_key("lk_" + "x" * 43),
            as_key(key["secret"] + "x"),
            as_key("' OR 1=1 --"),
        ):
            response = await anonymous.get("/v1/accounts", headers=headers)
            assert problem(response) == (401, "unauthorized"), headers
            assert key["secret"] not in response.text
        assert (await anonymous.get("/v1/accounts", headers=as_key(key["secret"]))).is_success
        revoked = await client.delete(f"/v1/api-keys/{key['id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        response = await anonymous.get("/v1/accounts", headers=as_key(key["secret"]))
        assert problem(response) == (401, "unauthorized")
        # unauthenticated endpoints stay open
        for path in ("/health", "/ready", "/schema/openapi.json"):
            assert (await anonymous.get(path)).status_code == 200, path
    again = await client.delete(f"/v1/api-keys/{key['id']}")
    assert again.status_code == 200
    missing = await client.delete(f"/v1/api-keys/{uuid.uuid4()}")
    assert problem(missing) == (404, "api_key_not_found")


async def test_admin_key_bootstrap_is_idempotent(
    settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    await ensure_admin_key(settings)
    await ensure_admin_key(settings)
    row = sync_db.execute("SELECT count(*), min(role) FROM api_keys").fetchone()
    assert row is not None and tuple(row) == (1, "admin")


async def test_schema_documents_the_api(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    for path in ("/v1/accounts", "/v1/transfers", "/v1/transfers/batch", "/v1/api-keys"):
        assert path in spec["paths"], path
    ui = await client.get("/schema")
    assert ui.status_code == 200
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = (await client.get("/ready")).json()
    assert ready["status"] == "ready"


async def test_a_replayed_key_creation_never_shows_or_stores_the_secret(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    body = {"name": "ci", "role": "reader"}
    first = await client.post("/v1/api-keys", json=body, headers={"Idempotency-Key": "ci-key"})
    assert first.status_code == 201, first.text
    secret = first.json()["secret"]
    assert secret
    stored = sync_db.execute(
        "SELECT count(*) FROM idempotency_keys WHERE position(%s::bytea in response_body) > 0",
        (secret.encode(),),
    ).fetchone()
    assert stored == (0,)
    replay = await client.post("/v1/api-keys", json=body, headers={"Idempotency-Key": "ci-key"})
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (201, "true")
    assert replay.json() == {**first.json(), "secret": None}
    assert secret not in replay.text
    row = sync_db.execute("SELECT count(*) FROM api_keys WHERE name = 'ci'").fetchone()
    assert row == (1,)
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/v1/accounts", headers=headers)).status_code == 200
