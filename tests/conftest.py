"""Test infrastructure: a real PostgreSQL (embedded, or TEST_DATABASE_URL), migrated once into a
template database; every test gets a fresh database cloned from it, and the real app on top."""

from __future__ import annotations

import itertools
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ledger.core import migrate
from ledger.core.settings import Settings
from ledger.embedded import EmbeddedPostgres
from observability.logging import configure_logging
from tests.helpers import AUDIT_KEY_ENV, app_client

# log_capture: every log line of the session also goes to one file, scanned for secrets at the end.
pytest_plugins = ["tests.kafka_fixtures", "tests.log_capture", "tests.pooler_fixtures"]

TEMPLATE = "ledger_template"
_counter = itertools.count()


def _admin_url(base: str, database: str) -> str:
    head, _, _ = base.rpartition("/")
    return f"{head}/{database}"


@pytest.fixture(scope="session", autouse=True)
def audit_signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One checkpoint signing key for the session, in LEDGER_AUDIT_SIGNING_KEY: every `serve`
    and `worker` a test starts needs one (tests/helpers.py::inherited_env passes it on)."""
    from ledger.audit.signing import generate_key

    path = tmp_path_factory.mktemp("audit-key") / "signing-key.pem"
    generate_key(path)
    before = os.environ.get(AUDIT_KEY_ENV)
    os.environ[AUDIT_KEY_ENV] = str(path)
    yield path
    if before is None:
        os.environ.pop(AUDIT_KEY_ENV, None)
    else:
        os.environ[AUDIT_KEY_ENV] = before


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a server we may create databases on."""
    configure_logging("info", "json")  # info: the secrets scan must see request lines
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    tmp = Path(tempfile.mkdtemp(prefix="ledger-test-pg-"))
    server = EmbeddedPostgres(tmp, fast_unsafe=True).start()
    try:
        yield server.url("postgres")
    finally:
        server.remove()


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> str:
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    url = _admin_url(pg_server, TEMPLATE)
    migrate.upgrade(url)
    return url


def new_database(pg_server: str, template: str = TEMPLATE) -> str:
    name = f"t_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return _admin_url(pg_server, name)


@pytest.fixture
def db_url(pg_server: str, template_db: str) -> str:
    return new_database(pg_server)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        admin_key="lk_test_admin_secret_0123456789",
        log_format="json",
        # As `serve` always has one: the API answers only checkpoints its keys verify.
        audit_signing_key=os.environ.get(AUDIT_KEY_ENV),
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app in the test's own event loop. Not Litestar's AsyncTestClient: that one runs
    each request to completion on a blocking portal, so concurrent requests would silently run
    one after another and every race test would pass without racing."""
    from ledger.cli.main import ensure_admin_key

    await ensure_admin_key(settings)
    async with app_client(settings) as test_client:
        yield test_client


@pytest.fixture
def sync_db(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn
