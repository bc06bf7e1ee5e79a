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
