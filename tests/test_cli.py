"""The `ledger` command as a real process: keys create (the secret is the only stdout line, and
it works over HTTP) and the db subcommands."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg

from ledger.core import migrate
from ledger.core.settings import Settings
from tests.helpers import inherited_env
from tests.test_errors import problem

LEDGER = str(Path(sys.executable).parent / "ledger")


async def ledger(settings: Settings | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = inherited_env()
    env["LEDGER_LOG_LEVEL"] = "info"
    if settings is not None:
        env["LEDGER_DATABASE_URL"] = settings.database_url or ""
    return await asyncio.to_thread(
        subprocess.run,
        [LEDGER, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_keys_create_prints_only_a_working_secret(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    result = await ledger(settings, "keys", "create", "--name", "ops bot", "--role", "operator")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    secret = lines[0]
    assert secret.strip() == secret and len(secret) >= 32
    assert secret not in result.stderr
    headers = {"Authorization": f"Bearer {secret}"}
    created = await client.post(
        "/v1/accounts",
        json={"code": "by-cli-key", "currency": "USD", "normal_balance": "credit"},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    assert problem(await client.get("/v1/api-keys", headers=headers)) == (403, "forbidden")
    row = sync_db.execute(
        "SELECT name, role, secret_hash <> %s FROM api_keys WHERE name = 'ops bot'", (secret,)
    ).fetchone()
    assert row == ("ops bot", "operator", True)
    audit = sync_db.execute(
        "SELECT actor_name, data_text::text FROM audit_records"
        " WHERE action = 'api_key.create' AND data_text -> 'request' ->> 'name' = 'ops bot'"
    ).fetchall()
    assert [r[0] for r in audit] == ["cli"]
    assert secret not in audit[0][1]


async def test_keys_create_refuses_bad_arguments(
    settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    for args in (("--name", "x", "--role", "root"), ("--name", "n" * 129, "--role", "reader")):
        result = await ledger(settings, "keys", "create", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stdout == ""
    missing = await ledger(None, "keys", "create", "--name", "x", "--role", "reader")
    assert missing.returncode == 2 and "LEDGER_DATABASE_URL" in missing.stderr
    row = sync_db.execute("SELECT count(*) FROM api_keys").fetchone()
    assert row == (0,)


async def test_db_current_and_upgrade(settings: Settings) -> None:
    head = migrate.head_revision()
    current = await ledger(settings, "db", "current")
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == head
    upgraded = await ledger(settings, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == head
