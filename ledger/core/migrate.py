"""Alembic, driven from code: `ledger db ...`, `ledger dev` and the tests use these.

Migrations connect like the service does (libpq's URL, several hosts and
`target_session_attrs=read-write` included), through one connection of their own: Alembic runs
on it rather than building an engine from a URL string."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from ledger.core.db import connection_defaults
from ledger.core.dburl import DatabaseUrl

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection  # migrations/env.py runs on it
    return config


@contextmanager
def _connection(database_url: str) -> Iterator[sa.Connection]:
    url = DatabaseUrl.parse(database_url)
    engine = create_engine(
        url.sqlalchemy_url(),
        poolclass=pool.NullPool,
        connect_args=url.connect_args(connection_defaults("ledger-db")),
    )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    with _connection(database_url) as conn:
        command.upgrade(alembic_config(conn), revision)
        conn.commit()


def downgrade(database_url: str, revision: str) -> None:
    with _connection(database_url) as conn:
        command.downgrade(alembic_config(conn), revision)
        conn.commit()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(database_url: str) -> str | None:
    with _connection(database_url) as conn:
        return MigrationContext.configure(conn).get_current_revision()
