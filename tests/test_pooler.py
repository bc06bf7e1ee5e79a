"""Through PgBouncer 1.18 in transaction mode (no prepared-statement support), contract 9.3: the
bank test (many clients moving money both ways, a real `ledger serve` among them) and the
Idempotency-Key races pass as they do on direct connections. Before the service knew of the
pooler, the first transfer through it was a 500 (`prepared statement "_pg3_0" already exists`)."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core import limits
from ledger.core.db import create_engine, create_sessionmaker, run_in_transaction
from ledger.core.settings import Settings
from tests import test_concurrency, test_idempotency
from tests.helpers import transfer

SETTINGS_SQL = sa.text(
    "SELECT current_setting('lock_timeout'), current_setting('statement_timeout'), "
    "current_setting('TimeZone')"
)


async def test_the_bank_through_pgbouncer(
    pooled_settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    await test_concurrency.test_transfers_both_ways_from_many_clients_at_once(
        pooled_settings, sync_db
    )


async def test_idempotency_races_through_pgbouncer(
    pooled_client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    for race in (
        test_idempotency.test_concurrent_transfers_with_one_key_make_one_effect,
        test_idempotency.test_concurrent_account_creates_with_one_key_make_one_account,
        test_idempotency.test_concurrent_batches_and_reversals_with_one_key,
        test_idempotency.test_concurrent_creates_with_one_transfer_id_make_one_transfer,
    ):
        await race(pooled_client, sync_db)


async def test_each_transaction_through_the_pooler_gets_the_request_timeouts(
    pooled_client: httpx.AsyncClient, pooled_settings: Settings
) -> None:
    """The timeouts a direct connection gets at startup come with each pooled transaction; the
    same statements, run again and again (psycopg would prepare them after five), keep working."""
    engine = create_engine(pooled_settings, pool_size=2)
    try:

        async def timeouts(session: AsyncSession) -> tuple[Any, ...]:
            row = (await session.execute(SETTINGS_SQL)).one()
            return tuple(row)

        for _ in range(12):
            got = await run_in_transaction(create_sessionmaker(engine), timeouts)
            assert got == (
                f"{limits.DB_LOCK_TIMEOUT_MS // 1000}s",
                f"{limits.DB_STATEMENT_TIMEOUT_MS // 60_000}min",
                "UTC",
            )
    finally:
        await engine.dispose()
    source = await pooled_client.post(
        "/v1/accounts",
        json={"code": "src", "currency": "USD", "normal_balance": "debit", "min_balance": None},
    )
    sink = await pooled_client.post(
        "/v1/accounts", json={"code": "sink", "currency": "USD", "normal_balance": "credit"}
    )
    for amount in range(1, 21):
        response = await transfer(pooled_client, source.json()["id"], sink.json()["id"], amount)
        assert response.status_code == 201, response.text
