"""Webhook endpoints over HTTP (contract 9.2): admin only, the secret shown once and never
again (not in reads, replays, audit records or logs), URLs refused before anything is sent,
the bound of 100 endpoints, rotation, the delivery log's refusals."""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from ledger.core import limits
from ledger.core.settings import Settings
from tests.helpers import AUDIT_KEY_ENV

HOOK = "https://hooks.example/ledger"


@pytest.fixture
def settings(db_url: str) -> Settings:
    """As `serve` runs: with the audit signing key, from which the secrets' sealing key comes."""
    return Settings(
        database_url=db_url,
        admin_key="lk_test_admin_secret_0123456789",
        log_format="json",
        audit_signing_key=os.environ[AUDIT_KEY_ENV],
    )


async def create(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/webhooks", json={"url": HOOK, **body})


async def test_secret_is_shown_once_and_stored_sealed(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    first = await client.post(
        "/v1/webhooks",
        json={"url": HOOK, "event_types": ["ledger.transfer.*"], "description": "payouts"},
        headers={"Idempotency-Key": "hook-1"},
    )
    assert first.status_code == 201, first.text
    created = first.json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert created["event_types"] == ["ledger.transfer.*"] and created["enabled"] is True
    replay = await client.post(
        "/v1/webhooks",
        json={"url": HOOK, "event_types": ["ledger.transfer.*"], "description": "payouts"},
        headers={"Idempotency-Key": "hook-1"},
    )
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["secret"] is None and replay.json()["id"] == created["id"]
    got = await client.get(f"/v1/webhooks/{created['id']}")
    listed = await client.get("/v1/webhooks")
    assert got.status_code == 200 and "secret" not in got.json()
    assert [w["id"] for w in listed.json()["data"]] == [created["id"]]
    rotated = await client.post(f"/v1/webhooks/{created['id']}/secret/rotate")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != secret
    # Nowhere in the database in the clear: not the secrets table, the audit trail, the stored
    # idempotent answers; the old secret signs for 24 h beside the new one.
    dump = sync_db.execute(
        "SELECT string_agg(t::text, '|') FROM ("
        " SELECT s::text AS t FROM webhook_secrets s UNION ALL"
        " SELECT a::text FROM audit_records a UNION ALL"
        " SELECT i::text FROM idempotency_keys i) x"
    ).fetchone()
    assert dump is not None
    for value in (secret, new_secret, secret.removeprefix("whsec_")):
        assert value not in dump[0]
    rows = sync_db.execute(
        "SELECT expires_at IS NULL, key_id, sealed FROM webhook_secrets ORDER BY created_at"
    ).fetchall()
    assert [r[0] for r in rows] == [False, True]
    for _current, key_id, sealed in rows:
        assert key_id != "none" and len(sealed) > 44  # AES-GCM: nonce + ciphertext + tag
        assert secret.encode() not in bytes(sealed) and new_secret.encode() not in bytes(sealed)
    actions = [
        r[0]
        for r in sync_db.execute(
            "SELECT action FROM audit_records WHERE object_type = 'webhook' ORDER BY at"
        ).fetchall()
    ]
    assert actions == ["webhook.create", "webhook.secret_rotate"]


async def test_urls_are_refused_before_anything_is_sent(client: httpx.AsyncClient) -> None:
    refused = [
        "http://hooks.example/x",  # https only (LEDGER_WEBHOOK_ALLOW_HTTP is off)
        "https://user:pw@hooks.example/x",  # credentials would be logged and audited
        "https://127.0.0.1/x",
        "https://[::1]/x",
        "https://10.1.2.3/x",
        "https://169.254.169.254/latest/meta-data",  # link-local: cloud metadata
        "https://localhost:8443/x",
        "https://[::ffff:192.168.0.1]/x",
        "https://hooks.example/x#part",
    ]
    for url in refused:
        response = await client.post("/v1/webhooks", json={"url": url})
        assert response.status_code == 422, (url, response.text)
        assert response.json()["code"] == "webhook_url_refused", url
    for body in (
        {"url": "not a url"},
        {"url": "ftp://hooks.example/x"},
        {"url": HOOK, "event_types": []},
        {"url": HOOK, "event_types": ["Ledger.*"]},
        {"url": HOOK, "event_types": ["ledger.*.posted"]},
        {"url": HOOK, "description": "a\nb"},
        {"url": HOOK, "secret": "whsec_mine"},
    ):
        response = await client.post("/v1/webhooks", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["code"] == "validation_error"
    assert (await client.get("/v1/webhooks")).json()["data"] == []


async def test_at_most_100_endpoints(client: httpx.AsyncClient) -> None:
    ids = []
    for i in range(limits.WEBHOOK_ENDPOINTS_MAX):
        response = await create(client, description=f"n{i}")
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    over = await create(client)
    assert over.status_code == 422 and over.json()["code"] == "webhook_endpoints_limit"
    assert (await client.delete(f"/v1/webhooks/{ids[0]}")).status_code == 200
    assert (await create(client)).status_code == 201  # a deleted one frees its place


async def test_patch_delete_and_refusals(client: httpx.AsyncClient) -> None:
    endpoint = (await create(client)).json()
    url = f"/v1/webhooks/{endpoint['id']}"
    patched = await client.patch(
        url, json={"event_types": ["ledger.account.*", "ledger.transfer.posted"], "enabled": False}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["event_types"] == ["ledger.account.*", "ledger.transfer.posted"]
    assert patched.json()["enabled"] is False
    bad = await client.patch(url, json={"url": "http://hooks.example/"})
    assert bad.status_code == 422 and bad.json()["code"] == "webhook_url_refused"
    assert (await client.get(f"{url}/deliveries?status=pending")).json()["data"] == []
    wrong_status = await client.get(f"{url}/deliveries?status=lost")
    assert wrong_status.status_code == 422
    retry = await client.post(f"{url}/deliveries/{uuid.uuid4()}/retry")
    assert retry.status_code == 404 and retry.json()["code"] == "webhook_delivery_not_found"
    replay = await client.post(f"{url}/replay", json={"after": "x1"})
    assert replay.status_code == 422
    accepted = await client.post(f"{url}/replay", json={"after": "0"})
    assert accepted.status_code == 202 and accepted.json()["after"] == "0"
    deleted = await client.delete(url)
    assert deleted.status_code == 200 and deleted.json()["id"] == endpoint["id"]
    for response in (
        await client.get(url),
        await client.delete(url),
        await client.patch(url, json={"enabled": True}),
        await client.post(f"{url}/secret/rotate"),
        await client.get(f"{url}/deliveries"),
    ):
        assert response.status_code == 404 and response.json()["code"] == "webhook_not_found"


async def test_only_admin_keys(client: httpx.AsyncClient) -> None:
    for role in ("operator", "reader", "auditor"):
        key = await client.post("/v1/api-keys", json={"name": role, "role": role})
        headers = {"Authorization": f"Bearer {key.json()['secret']}"}
        for method, path in (("GET", "/v1/webhooks"), ("POST", "/v1/webhooks")):
            response = await client.request(method, path, headers=headers, json={"url": HOOK})
            assert response.status_code == 403, (role, method, response.text)


async def test_console_shows_each_endpoints_health(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    from tests.console_helpers import browser, sign_in

    failing = (await create(client, description="partner")).json()
    await create(client, url="https://hooks.example/quiet")
    sync_db.execute(
        "INSERT INTO webhook_deliveries (endpoint_id, position, event_id, event_type, subject,"
        " status, attempts, next_attempt_at, deadline_at, last_attempt_at, last_status_code,"
        " last_error, envelope, created_at, updated_at) VALUES (%s, 1, gen_random_uuid(),"
        " 'ledger.account.created', 's', 'pending', 3, now(), now() + interval '1 day', now(),"
        " 503, 'status 503', '{}', now(), now())",
        (failing["id"],),
    )
    async with browser(settings) as web:
        assert (await sign_in(web, settings.admin_key or "")).status_code == 303
        page = await web.get("/console/webhooks")
    assert page.status_code == 200, page.text
    row = page.text.split(f'data-endpoint="{failing["id"]}"', 1)[1].split("</tr>", 1)[0]
    assert "retrying" in row and "status 503" in row and '<td class="num">1</td>' in row
    assert "healthy" in page.text  # the other one
    assert "whsec_" not in page.text


async def test_retention_removes_old_finished_deliveries_and_deleted_endpoints(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    from ledger.core.db import create_engine, create_sessionmaker
    from ledger.webhooks.delivery.retention import retention_step
    from ledger.worker.jobs import webhook_jobs

    kept = (await create(client)).json()
    gone = (await create(client, url="https://hooks.example/gone")).json()
    insert = (
        "INSERT INTO webhook_deliveries (endpoint_id, position, event_id, event_type, subject,"
        " status, attempts, deadline_at, envelope, created_at, updated_at) VALUES (%s, %s,"
        " gen_random_uuid(), 't', 's', %s, 1, now(), '{}', now() - %s::interval,"
        " now() - %s::interval)"
    )
    old, new = "200 hours", "1 hour"  # the retention is LEDGER_EVENT_RETENTION_HOURS, 168
    for position, status, age in (
        (1, "delivered", old),
        (2, "failed", old),
        (3, "pending", old),  # still being delivered: kept, however old
        (4, "delivered", new),
    ):
        sync_db.execute(insert, (kept["id"], position, status, age, age))
    sync_db.execute(insert, (gone["id"], 1, "pending", new, new))
    assert (await client.delete(f"/v1/webhooks/{gone['id']}")).status_code == 200
    engine = create_engine(settings, pool_size=1)
    try:
        assert await retention_step(settings, create_sessionmaker(engine)) == 0  # under a batch
    finally:
        await engine.dispose()
    left = sync_db.execute(
        "SELECT endpoint_id::text, position FROM webhook_deliveries ORDER BY 1, 2"
    ).fetchall()
    assert left == [(kept["id"], 3), (kept["id"], 4)]
    endpoints = sync_db.execute("SELECT id::text FROM webhook_endpoints").fetchall()
    assert endpoints == [(kept["id"],)]
    # A worker with LEDGER_WEBHOOK_DELIVERY=off keeps the cleanup and leaves delivery to others.
    names = [job.name for job in webhook_jobs(settings.with_(webhook_delivery=False), None)]  # type: ignore[arg-type]
    assert names == ["webhook-retention"]


def test_settings_read_the_webhook_variables(tmp_path: Any) -> None:
    from ledger.core.errors import ConfigurationError
    from ledger.core.settings import load_settings
    from ledger.webhooks.secrets import UNSEALED_KEY_ID, secret_box

    assert load_settings({}).webhook_allow_http is False
    read = load_settings(
        {
            "LEDGER_WEBHOOK_ALLOW_HTTP": "true",
            "LEDGER_WEBHOOK_ALLOW_PRIVATE": "true",
            "LEDGER_WEBHOOK_DELIVERY": "off",
        }
    )
    assert (read.webhook_allow_http, read.webhook_allow_private) == (True, True)
    assert read.webhook_delivery is False
    key_file = tmp_path / "webhook.key"
    key_file.write_bytes(os.urandom(32).hex().encode())
    own = secret_box(Settings(webhook_secret_key=str(key_file)))
    derived = secret_box(Settings(audit_signing_key=os.environ[AUDIT_KEY_ENV]))
    assert UNSEALED_KEY_ID not in (own.key_id, derived.key_id) and own.key_id != derived.key_id
    short = tmp_path / "short.key"
    short.write_bytes(b"too short")
    with pytest.raises(ConfigurationError):
        secret_box(Settings(webhook_secret_key=str(short)))
