"""`ledger verify`: clean ledgers pass; money edited behind the service's back (as a superuser,
triggers off) is caught, by the real command, with one line per violation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ledger.core.settings import Settings
from tests.helpers import funded_pair, transfer, violations

LEDGER = str(Path(sys.executable).parent / "ledger")


async def run_verify(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": settings.database_url or "",
        "LEDGER_LOG_LEVEL": "warning",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [LEDGER, "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def behind_the_back(db: psycopg.Connection[Any], *statements: str) -> None:
    """Edit as a superuser with the guarding triggers switched off, as an attacker might."""
    with db.transaction():
        db.execute("SET LOCAL session_replication_role = replica")
        for statement in statements:
            db.execute(statement)


async def busy_ledger(client: httpx.AsyncClient) -> tuple[dict[str, Any], ...]:
    source, a, b = await funded_pair(client, 1000)
    moved = (await transfer(client, a["id"], b["id"], 300)).json()
    assert (
        await client.post(f"/v1/transfers/{moved['id']}/reverse", json={"amount": 100})
    ).is_success
    assert (await transfer(client, b["id"], a["id"], 50)).status_code == 201
    return source, a, b, moved


async def test_verify_passes_on_a_clean_ledger_and_names_a_corrupted_account(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, _b, _moved = await busy_ledger(client)
    clean = await run_verify(settings)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout == ""

    behind_the_back(
        sync_db, f"UPDATE accounts SET posted_credits = posted_credits + 7 WHERE id = '{a['id']}'"
    )
    broken = await run_verify(settings)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    lines = broken.stdout.splitlines()
    assert lines, broken.stderr
    assert any(a["id"] in line and "posted" in line for line in lines), lines
    assert len(lines) == len(set(lines)) == len(await violations(settings))
    assert all(line.strip() for line in lines)


async def test_each_invariant_is_checked(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    source, a, b, moved = await busy_ledger(client)
    assert await violations(settings) == []
    corruptions = [
        # a hold that no pending transfer explains
        (f"UPDATE accounts SET pending_debits = 5 WHERE id = '{a['id']}'", "pending", a["id"]),
        # a floor broken: min_balance above what is available
        # (the CHECK constraint holds even with triggers off: a superuser must drop it first)
        (
            "ALTER TABLE accounts DROP CONSTRAINT ck_accounts_floor;"
            f" UPDATE accounts SET min_balance = 10000 WHERE id = '{b['id']}'",
            "floor",
            b["id"],
        ),
        # a transfer whose entries no longer match its posted amount
        (
            f"UPDATE transfers SET posted_amount = 299 WHERE id = '{moved['id']}'",
            "entries",
            moved["id"],
        ),
        # reversals that do not add up
        (
            f"UPDATE transfers SET reversed_amount = 0 WHERE id = '{moved['id']}'",
            "reversal",
            moved["id"],
        ),
        # a lost event: the account's sequence has a gap
        (
            "DELETE FROM outbox_events WHERE id = (SELECT id FROM outbox_events"
            f" WHERE subject = '{source['id']}' AND sequence = 2)",
            "sequence",
            source["id"],
        ),
    ]
    corruptions += [
        # a transfer moved to another currency than its accounts'
        (
            f"UPDATE transfers SET currency = 'EUR' WHERE id = '{moved['id']}'",
            "transfer currency differs",
            moved["id"],
        ),
        # an account whose version went back behind its own statement
        (
            f"UPDATE accounts SET version = 1 WHERE id = '{b['id']}'",
            "beyond the account's version",
            b["id"],
        ),
    ]
    for statement, rule, subject in corruptions:
        behind_the_back(sync_db, statement)
        found = await violations(settings)
        assert any(rule in line and subject in line for line in found), (rule, found)
    # an entry that breaks double entry and the running balance
    behind_the_back(
        sync_db,
        "INSERT INTO entries (account_id, transfer_id, direction, amount, balance_after,"
        f" sequence, posted_at) VALUES ('{a['id']}', '{moved['id']}', 'debit', 1, 0, 999, now())",
    )
    found = await violations(settings)
    assert any("debits and credits differ" in line and "USD" in line for line in found), found
    assert any("running balance" in line and a["id"] in line for line in found), found


async def test_the_database_refuses_entries_that_break_double_entry(
    client: httpx.AsyncClient, sync_db: psycopg.Connection[Any]
) -> None:
    """The entries trigger, with nothing switched off: one leg alone, or legs that no longer
    add up to the posted amount, are refused by the statement itself."""
    _, a, b = await funded_pair(client, 1000)
    moved = (await transfer(client, a["id"], b["id"], 300)).json()
    columns = "account_id, transfer_id, direction, amount, balance_after, sequence, posted_at"

    def leg(account: str, direction: str, amount: int, sequence: int) -> str:
        return f"('{account}', '{moved['id']}', '{direction}', {amount}, 0, {sequence}, now())"

    refused = [
        [leg(a["id"], "debit", 1, 900)],
        [leg(a["id"], "debit", 5, 900), leg(b["id"], "credit", 5, 900)],
        [leg(a["id"], "debit", 300, 900), leg(b["id"], "credit", 300, 900)],  # 600 != 300
    ]
    before = sync_db.execute("SELECT count(*) FROM entries").fetchone()
    for values in refused:
        insert = f"INSERT INTO entries ({columns}) VALUES {', '.join(values)}"
        unbalanced = pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="unbalanced")
        with unbalanced, sync_db.transaction():
            sync_db.execute(insert)
    assert sync_db.execute("SELECT count(*) FROM entries").fetchone() == before
