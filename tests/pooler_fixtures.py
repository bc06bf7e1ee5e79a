"""PgBouncer (transaction mode) in front of the suite's server, for the whole session, and the
settings of a test database reached through it (contract 9.3)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from ledger.core.settings import Settings
from tests.helpers import app_client
from tests.poolers import PgBouncer


@pytest.fixture(scope="session")
def pgbouncer(pg_server: str) -> Iterator[PgBouncer]:
    port = int(psycopg.conninfo.conninfo_to_dict(pg_server).get("port") or 5432)
    bouncer = PgBouncer(Path(tempfile.mkdtemp(prefix="ledger-test-pgbouncer-")), port).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


def through(bouncer: PgBouncer, settings: Settings) -> Settings:
    """`settings` with the request path through PgBouncer and session state direct."""
    database = (settings.database_url or "").rsplit("/", 1)[1]
    return settings.with_(
        database_url=bouncer.url(database), database_direct_url=settings.database_url
    )


@pytest.fixture
def pooled_settings(settings: Settings, pgbouncer: PgBouncer) -> Settings:
    return through(pgbouncer, settings)


@pytest.fixture
async def pooled_client(pooled_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    from ledger.cli.main import ensure_admin_key

    await ensure_admin_key(pooled_settings)
    async with app_client(pooled_settings) as test_client:
        yield test_client
