"""Idempotency keys past their life: a new key to a request, and deleted by the worker in
bounded batches (contract 8.2)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import psycopg

from ledger.core import limits
from ledger.core.db import create_engine, create_sessionmaker
from ledger.core.settings import Settings
from ledger.worker.jobs import idempotency_retention_step
from tests.helpers import balances, funded_pair

PAST_LIFE = dt.timedelta(seconds=limits.IDEMPOTENCY_KEY_TTL_SECONDS + 60)


def age_key(db: psycopg.Connection[Any], key: str, by: dt.timedelta) -> None:
    updated = db.execute(
        "UPDATE idempotency_keys SET created_at = created_at - %s WHERE key = %s", (by, key)
    )
    assert updated.rowcount == 1


async def test_an_expired_key_is_a_new_key(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b = await funded_pair(client, 1000)
    body = {"debit_account_id": a["id"], "credit_account_id": b["id"], "amount": 5}
    headers = {"Idempotency-Key": "pay-once-a-while"}
    first = await client.post("/v1/transfers", json=body, headers=headers)
    assert first.status_code == 201, first.text
    replay = await client.post("/v1/transfers", json=body, headers=headers)
    assert replay.headers.get("idempotent-replayed") == "true"
    assert replay.content == first.content

    age_key(sync_db, "pay-once-a-while", PAST_LIFE)
    again = await client.post("/v1/transfers", json=body, headers=headers)
    assert again.status_code == 201, again.text
    assert again.headers.get("idempotent-replayed") is None
    assert again.json()["id"] != first.json()["id"]  # a second effect: the key was new
    assert (await balances(client, a["id"]))["posted"] == 990

    # Another body with an expired key is not `idempotency_key_reused` either: the key is new.
    age_key(sync_db, "pay-once-a-while", PAST_LIFE)
    other = {**body, "amount": 7}
    third = await client.post("/v1/transfers", json=other, headers=headers)
    assert third.status_code == 201, third.text
    # ...and from then on it is a live key again, bound to its new body.
    reused = await client.post("/v1/transfers", json=body, headers=headers)
    assert reused.status_code == 422, reused.text
    assert reused.json()["code"] == "idempotency_key_reused"
    assert (await balances(client, a["id"]))["posted"] == 983


async def test_the_worker_deletes_expired_keys_in_bounded_batches(
    settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    principal = uuid.uuid4()
    expired = limits.IDEMPOTENCY_DELETE_BATCH_MAX * 2 + 17
    sync_db.execute(
        """
        INSERT INTO idempotency_keys (principal_id, key, fingerprint, status_code, response_body,
                                      created_at)
        SELECT %s, 'old-' || n, 'f', 201, '\\x6a7b7d'::bytea, now() - %s
          FROM generate_series(1, %s) AS n
        """,
        (principal, PAST_LIFE, expired),
    )
    sync_db.execute(
        """
        INSERT INTO idempotency_keys (principal_id, key, fingerprint, status_code, response_body,
                                      created_at)
        SELECT %s, 'live-' || n, 'f', 201, '\\x6a7b7d'::bytea, now() - interval '1 hour'
          FROM generate_series(1, 3) AS n
        """,
        (principal,),
    )
    engine = create_engine(settings, pool_size=1)
    try:
        sessionmaker = create_sessionmaker(engine)
        steps = []
        while True:
            done = await idempotency_retention_step(sessionmaker)
            steps.append(done)
            if not done:
                break
            if len(steps) > 10:
                raise AssertionError(f"retention never finished: {steps}")
    finally:
        await engine.dispose()
    # Full batches ask to run again at once; the last, partial one lets the job sleep.
    assert steps == [limits.IDEMPOTENCY_DELETE_BATCH_MAX] * 2 + [0]
    left = [row[0] for row in sync_db.execute("SELECT key FROM idempotency_keys ORDER BY key")]
    assert left == ["live-1", "live-2", "live-3"]
