"""Every write leaves exactly one audit record per object it changed, in the same transaction, with
the caller's identity, request id and trace id, and never a secret."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any

import psycopg
from litestar.testing import AsyncTestClient

from ledger.core.context import Actor, WriteContext
from ledger.core.db import create_engine, create_sessionmaker
from ledger.core.settings import Settings
from ledger.worker.jobs import expire_step
from tests.audit_helpers import last_seq, records, run_cli
from tests.helpers import create_account, funded_pair, transfer

_trace_counter = itertools.count(1)
EXPIRY_WAIT_SECONDS_MAX = 30


def _trace_headers() -> tuple[dict[str, str], str, str]:
    """Fresh X-Request-ID and W3C traceparent headers, with the ids a record must carry."""
    request_id = f"req-{uuid.uuid4().hex[:16]}"
    trace_id = f"{next(_trace_counter):032x}"
    span_id = "00f067aa0ba902b7"
    headers = {"X-Request-ID": request_id, "traceparent": f"00-{trace_id}-{span_id}-01"}
    return headers, request_id, trace_id


async def _admin_key_id(client: AsyncTestClient[Any]) -> str:
    response = await client.get("/v1/api-keys")
    assert response.status_code == 200, response.text
    [admin] = [k for k in response.json()["data"] if k["name"] == "admin"]
    return str(admin["id"])


class Trail:
    """Runs one write and returns the audit records it left behind."""

    def __init__(self, client: AsyncTestClient[Any], db: psycopg.Connection[Any]) -> None:
        self.client = client
        self.db = db

    async def write(
        self, method: str, url: str, body: Any = None, *, status: int, headers: Any = None
    ) -> tuple[Any, list[dict[str, Any]], str, str]:
        trace, request_id, trace_id = _trace_headers()
        before = last_seq(self.db)
        response = await self.client.request(
            method, url, json=body, headers={**trace, **(headers or {})}
        )
        assert response.status_code == status, response.text
        return response, records(self.db, before), request_id, trace_id


def _check(
    record: dict[str, Any],
    *,
    action: str,
    object_id: str,
    object_type: str,
    actor_id: str,
    request_id: str,
    trace_id: str,
) -> None:
    assert record["action"] == action
    assert record["object_type"] == object_type
    assert record["object_id"] == object_id
    assert str(record["actor_id"]) == actor_id
    assert record["actor_name"] == "admin"
    assert record["request_id"] == request_id
    assert record["trace_id"] == trace_id
    assert record["client_addr"]


async def test_each_write_leaves_one_record_with_who_and_where(
    client: AsyncTestClient[Any], sync_db: psycopg.Connection[Any], settings: Settings
) -> None:
    trail = Trail(client, sync_db)
    admin_id = await _admin_key_id(client)
    _, a, b = await funded_pair(client, 10_000)

    async def one(
        method: str,
        url: str,
        body: Any,
        status: int,
        *,
        action: str,
        object_type: str,
        object_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        response, found, request_id, trace_id = await trail.write(
            method, url, body, status=status, headers=headers
        )
        assert len(found) == 1, found
        result = response.json()
        _check(
            found[0],
            action=action,
            object_type=object_type,
            object_id=object_id or result["id"],
            actor_id=admin_id,
            request_id=request_id,
            trace_id=trace_id,
        )
        return result, found[0]

    # accounts: create, update (with the values before and after)
    account, record = await one(
        "POST",
        "/v1/accounts",
        {"code": "audit:acct", "currency": "USD", "normal_balance": "credit"},
        201,
        action="account.create",
        object_type="account",
    )
    assert record["data"]["request"]["code"] == "audit:acct"
    assert record["data"]["result"]["id"] == account["id"]
    _, record = await one(
        "PATCH",
        f"/v1/accounts/{account['id']}",
        {"metadata": {"tier": "gold"}},
        200,
        action="account.update",
        object_type="account",
        headers={"If-Match": '"1"'},
    )
    assert record["data"]["before"] == {"metadata": {}}
    assert record["data"]["after"] == {"metadata": {"tier": "gold"}}

    # transfers: posted at once, pending then posted, pending then voided, empty void, reversed
    body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 100}
    posted, record = await one(
        "POST", "/v1/transfers", body, 201, action="transfer.create", object_type="transfer"
    )
    assert record["data"]["request"]["amount"] == 100
    assert record["data"]["result"]["state"] == "posted"
    pending, _ = await one(
        "POST",
        "/v1/transfers",
        {**body, "pending": True},
        201,
        action="transfer.create",
        object_type="transfer",
    )
    _, record = await one(
        "POST",
        f"/v1/transfers/{pending['id']}/post",
        {"amount": 60},
        200,
        action="transfer.post",
        object_type="transfer",
    )
    assert record["data"]["result"]["posted_amount"] == 60
    to_void, _ = await one(
        "POST",
        "/v1/transfers",
        {**body, "pending": True},
        201,
        action="transfer.create",
        object_type="transfer",
    )
    await one(
        "POST",
        f"/v1/transfers/{to_void['id']}/void",
        None,
        200,
        action="transfer.void",
        object_type="transfer",
    )
    never_seen = str(uuid.uuid4())
    _, record = await one(
        "POST",
        f"/v1/transfers/{never_seen}/void",
        None,
        200,
        action="transfer.void",
        object_type="transfer",
    )
    assert record["data"]["result"]["empty_cancel"] is True
    reversal, record = await one(
        "POST",
        f"/v1/transfers/{posted['id']}/reverse",
        {"amount": 40},
        201,
        action="transfer.reverse",
        object_type="transfer",
        object_id=posted["id"],
    )
    assert record["data"]["result"]["id"] == reversal["id"]
    assert record["data"]["reversed_amount"] == 40

    # a batch: one record per transfer it created, all from the same request
    response, found, request_id, trace_id = await trail.write(
        "POST",
        "/v1/transfers/batch",
        {"atomic": False, "transfers": [body, {**body, "amount": 10**15}, body]},
        status=200,
    )
    created_ids = [r["transfer"]["id"] for r in response.json()["results"] if r["status"] == 201]
    assert len(created_ids) == 2
    assert [r["object_id"] for r in found] == created_ids
    for record in found:
        _check(
            record,
            action="transfer.create",
            object_type="transfer",
            object_id=record["object_id"],
            actor_id=admin_id,
            request_id=request_id,
            trace_id=trace_id,
        )

    # API keys: create (the secret never reaches the record), revoke
    new_key, record = await one(
        "POST",
        "/v1/api-keys",
        {"name": "auditor-1", "role": "auditor"},
        201,
        action="api_key.create",
        object_type="api_key",
    )
    assert record["data"]["request"] == {"name": "auditor-1", "role": "auditor"}
    await one(
        "DELETE",
        f"/v1/api-keys/{new_key['id']}",
        None,
        200,
        action="api_key.revoke",
        object_type="api_key",
    )

    _assert_no_secret(sync_db, [settings.admin_key or "", new_key["secret"]])


async def test_refusals_and_replays_leave_no_record(
    client: AsyncTestClient[Any], sync_db: psycopg.Connection[Any]
) -> None:
    _, a, b = await funded_pair(client, 100)
    before = last_seq(sync_db)
    refused = await transfer(client, a["id"], b["id"], 1_000)
    assert refused.status_code == 422
    assert records(sync_db, before) == []

    body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 5}
    first = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    after_first = last_seq(sync_db)
    replay = await client.post("/v1/transfers", json=body, headers={"Idempotency-Key": "k-1"})
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert records(sync_db, after_first) == []
    assert len(records(sync_db, before)) == 1


async def test_expiry_and_cli_writes_name_their_actor(
    client: AsyncTestClient[Any], sync_db: psycopg.Connection[Any], settings: Settings, db_url: str
) -> None:
    _, a, b = await funded_pair(client, 100)
    response = await transfer(client, a["id"], b["id"], 30, pending=True, timeout_seconds=1)
    assert response.status_code == 201
    held = response.json()["id"]
    before = last_seq(sync_db)

    engine = create_engine(settings, pool_size=1)
    try:
        sessionmaker = create_sessionmaker(engine)
        for _ in range(EXPIRY_WAIT_SECONDS_MAX * 4):
            if await expire_step(sessionmaker):
                break
            await asyncio.sleep(0.25)
    finally:
        await engine.dispose()
    [record] = records(sync_db, before)
    assert record["action"] == "transfer.expire"
    assert record["object_id"] == held
    assert record["actor_id"] is None
    assert record["actor_name"] == Actor.system("expiry").name == "expiry"
    assert WriteContext(actor=Actor.cli()).actor.name == "cli"

    before = last_seq(sync_db)
    created = run_cli(db_url, "keys", "create", "--name", "ops-bot", "--role", "operator")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    [record] = records(sync_db, before)
    assert record["action"] == "api_key.create"
    assert record["actor_name"] == "cli"
    assert record["actor_id"] is None
    assert record["data"]["request"] == {"name": "ops-bot", "role": "operator"}
    _assert_no_secret(sync_db, [secret])


def _assert_no_secret(db: psycopg.Connection[Any], secrets: list[str]) -> None:
    rows = db.execute("SELECT row_to_json(r)::text FROM audit_records r").fetchall()
    assert rows
    for (text,) in rows:
        parsed = json.loads(text)
        assert parsed["id"]
        for secret in secrets:
            assert secret
            assert secret not in text
        assert "bearer" not in text.lower()
        assert "authorization" not in text.lower()


async def test_a_write_and_its_record_commit_together(
    client: AsyncTestClient[Any], sync_db: psycopg.Connection[Any]
) -> None:
    """An account whose audit insert fails is not created: one transaction for both."""
    sync_db.execute(
        "CREATE FUNCTION fail_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'audit unavailable' USING ERRCODE = 'check_violation'; END $$"
    )
    sync_db.execute(
        "CREATE TRIGGER fail_audit BEFORE INSERT ON audit_records "
        "FOR EACH ROW EXECUTE FUNCTION fail_audit()"
    )
    response = await client.post(
        "/v1/accounts", json={"code": "never", "currency": "USD", "normal_balance": "credit"}
    )
    assert response.status_code >= 400
    assert sync_db.execute("SELECT count(*) FROM accounts WHERE code = 'never'").fetchone() == (0,)
    sync_db.execute("DROP TRIGGER fail_audit ON audit_records")
    account = await create_account(client, code="now-it-works")
    assert records(sync_db)[-1]["object_id"] == account["id"]


async def test_concurrent_writes_keep_their_own_request_and_trace(
    client: AsyncTestClient[Any], sync_db: psycopg.Connection[Any]
) -> None:
    """Concurrent requests may share a transaction (group commit): each record still names the
    request and trace it came from."""
    _, a, b = await funded_pair(client, 10_000)
    body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 1}

    async def one() -> tuple[str, str, str]:
        headers, request_id, trace_id = _trace_headers()
        response = await client.post("/v1/transfers", json=body, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()["id"], request_id, trace_id

    sent = await asyncio.gather(*(one() for _ in range(40)))
    by_object = {r["object_id"]: r for r in records(sync_db)}
    for transfer_id, request_id, trace_id in sent:
        assert by_object[transfer_id]["request_id"] == request_id
        assert by_object[transfer_id]["trace_id"] == trace_id
