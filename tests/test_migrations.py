"""Alembic: the migrations go up, all the way down and up again, and the models describe exactly
the schema the migrations build."""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ledger.core import migrate
from ledger.core.settings import to_sqlalchemy_url
from ledger.tables import Base
from tests.conftest import _admin_url

GUARD_TRIGGERS = {"accounts_guard", "transfers_guard", "entries_append_only", "entries_balanced"}


def tables_and_triggers(url: str) -> tuple[set[str], set[str]]:
    with psycopg.connect(url) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
        triggers = {
            r[0]
            for r in conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal").fetchall()
        }
    return tables, triggers


def test_upgrade_downgrade_base_upgrade(pg_server: str) -> None:
    name = "migrations_round_trip"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _admin_url(pg_server, name)
    head = migrate.head_revision()
    assert head is not None

    migrate.upgrade(url)
    assert migrate.current_revision(url) == head
    tables, triggers = tables_and_triggers(url)
    assert {"accounts", "transfers", "entries", "idempotency_keys", "api_keys"} <= tables
    assert triggers >= GUARD_TRIGGERS

    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    tables, triggers = tables_and_triggers(url)
    assert tables <= {"alembic_version"}, tables
    assert triggers == set()
    with psycopg.connect(url) as conn:
        functions = conn.execute(
            "SELECT proname FROM pg_proc WHERE proname LIKE 'ledger_%'"
        ).fetchall()
    assert functions == []

    migrate.upgrade(url)
    assert migrate.current_revision(url) == head
    assert tables_and_triggers(url)[1] >= GUARD_TRIGGERS


def test_models_and_migrations_describe_the_same_schema(db_url: str) -> None:
    engine = sa.create_engine(to_sqlalchemy_url(db_url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences: list[Any] = compare_metadata(context, Base.metadata)
            # the comparison is not blind: a model with one more column is told apart
            altered = sa.MetaData()
            for table in Base.metadata.sorted_tables:
                table.to_metadata(altered)
            altered.tables["accounts"].append_column(sa.Column("extra", sa.Integer))
            control: list[Any] = compare_metadata(context, altered)
    finally:
        engine.dispose()
    assert {"accounts", "transfers", "entries"} <= set(Base.metadata.tables)
    assert differences == []
    assert [d[0] for d in control] == ["add_column"]
