"""`ledger verify --since-last`: after a recorded run it reads only what lies beyond that run's
marks, catches money edited there behind the service's back, refuses marks that do not describe
the data, and leaves rewrites below the marks to the full run, which catches them."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ledger.core.locks import SINGLETON_KEY, LockClass
from ledger.core.settings import Settings
from tests.helpers import funded_pair, transfer
from tests.test_verify import behind_the_back, busy_ledger

LEDGER = str(Path(sys.executable).parent / "ledger")


async def verify(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": settings.database_url or "",
        "LEDGER_LOG_LEVEL": "warning",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [LEDGER, "verify", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def checked(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """The counts of the incremental run's stderr line."""
    found = re.search(
        r"checked (\d+) transfers, (\d+) entries, (\d+) events and (\d+) changed accounts since",
        result.stderr,
    )
    assert found, result.stderr
    names = ("transfers", "entries", "events", "accounts")
    return dict(zip(names, map(int, found.groups()), strict=True))


def runs(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute("SELECT id, kind, full_run_id FROM verify_runs ORDER BY id").fetchall()


async def test_since_last_reads_only_what_changed_since_the_recorded_run(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b, _moved = await busy_ledger(client)
    first = await verify(settings, "--since-last")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout == ""
    assert "no recorded run yet: a full run instead" in first.stderr
    assert "full run: checked 4 transfers, 8 entries" in first.stderr

    nothing = await verify(settings, "--since-last")
    assert nothing.returncode == 0, nothing.stdout + nothing.stderr
    assert checked(nothing) == {"transfers": 0, "entries": 0, "events": 0, "accounts": 0}
    assert "carried forward from full run 1 of " in nothing.stderr

    for amount in (5, 6, 7):
        assert (await transfer(client, a["id"], b["id"], amount)).status_code == 201
    _, c, d = await funded_pair(client, 20)  # two new accounts, one with an entry
    later = await verify(settings, "--since-last")
    assert later.returncode == 0, later.stdout + later.stderr
    # 3 transfers a -> b and the funding of c: their 8 entries; events: one balance change per
    # account per transfer (8), one per transfer (4), three accounts created
    assert checked(later) == {"transfers": 4, "entries": 8, "events": 15, "accounts": 5}
    assert "since run 2 of " in later.stderr
    assert runs(sync_db) == [(1, "full", 1), (2, "incremental", 1), (3, "incremental", 1)]
    marks = dict(
        sync_db.execute(
            "SELECT account_id::text, posted_credits FROM verify_account_marks"
        ).fetchall()
    )
    assert marks[b["id"]] > 0 and marks[c["id"]] == 20 and marks[d["id"]] == 0


CORRUPTIONS = {
    # an entry of the new transfer moved one unit more than the transfer posted
    "wrong entry amount": (
        "UPDATE entries SET amount = amount + 1"
        " WHERE transfer_id = '{new}' AND direction = 'credit'",
        "transfer entries do not match its posted amount",
        "{new}",
    ),
    # the new transfer no longer posts what its entries moved
    "unbalanced transfer": (
        "UPDATE transfers SET posted_amount = posted_amount - 1 WHERE id = '{new}'",
        "transfer entries do not match its posted amount",
        "{new}",
    ),
    # the account the new transfer credited shows more than its entries
    "balance drift of a changed account": (
        "UPDATE accounts SET posted_credits = posted_credits + 7 WHERE id = '{b}'",
        "posted balance differs from its entries",
        "{b}",
    ),
    # an account nothing touched since the run: its balance columns are compared all the same
    "balance drift of an unchanged account": (
        "UPDATE accounts SET posted_debits = posted_debits + 7 WHERE id = '{source}'",
        "posted balance differs from its entries",
        "{source}",
    ),
    # a lost event of the changed account
    "lost event": (
        "DELETE FROM outbox_events WHERE subject = '{b}'"
        " AND sequence = (SELECT version FROM accounts WHERE id = '{b}') - 1",
        "account event sequence has a gap",
        "{b}",
    ),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
async def test_since_last_catches_money_edited_after_the_watermark(
    name: str, client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    source, a, b, _moved = await busy_ledger(client)
    assert (await verify(settings)).returncode == 0
    assert (await transfer(client, a["id"], b["id"], 9)).status_code == 201
    new = (await transfer(client, a["id"], b["id"], 11)).json()["id"]
    ids = {"new": new, "b": b["id"], "source": source["id"]}
    statement, rule, subject = CORRUPTIONS[name]
    behind_the_back(sync_db, statement.format(**ids))

    caught = await verify(settings, "--since-last")
    assert caught.returncode == 1, caught.stdout + caught.stderr
    lines = caught.stdout.splitlines()
    assert any(rule in line and subject.format(**ids) in line for line in lines), lines
    assert checked(caught)["transfers"] == 2
    assert [kind for _, kind, _ in runs(sync_db)] == ["full"]  # a failed run records nothing
    # and the next run reports it again, from the same marks
    again = await verify(settings, "--since-last")
    assert again.returncode == 1 and again.stdout == caught.stdout


async def test_a_rewrite_below_the_watermark_is_left_to_the_full_run(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    """By design: the incremental run does not read old rows again. The full run does."""
    _source, a, _b, _moved = await busy_ledger(client)
    assert (await verify(settings)).returncode == 0
    # a's first entry (its funding), which later entries of a follow
    behind_the_back(
        sync_db,
        "UPDATE entries SET balance_after = balance_after + 1 WHERE id ="
        f" (SELECT min(id) FROM entries WHERE account_id = '{a['id']}')",
    )
    incremental = await verify(settings, "--since-last")
    assert incremental.returncode == 0, incremental.stdout + incremental.stderr
    assert "rows at or below those ids are read again only by a full run" in incremental.stderr
    full = await verify(settings)
    assert full.returncode == 1
    assert any(
        "statement running balance is broken" in line and a["id"] in line
        for line in full.stdout.splitlines()
    ), full.stdout
    # and what it found is not carried forward as ok: the next incremental run is a full one
    assert runs(sync_db) == []
    next_run = await verify(settings, "--since-last")
    assert next_run.returncode == 1 and next_run.stdout == full.stdout
    assert "no recorded run yet: a full run instead" in next_run.stderr


async def test_marks_that_do_not_describe_the_data_are_refused(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    _source, a, b, _moved = await busy_ledger(client)
    assert (await verify(settings)).returncode == 0
    assert (await transfer(client, a["id"], b["id"], 9)).status_code == 201
    recorded = sync_db.execute(
        "SELECT entries_settled, entries_seen, events_settled FROM verify_runs"
    ).fetchone()
    assert recorded is not None

    forgeries = [
        # the watermark moved past the data
        (
            "UPDATE verify_runs SET entries_settled = entries_settled + 1000,"
            " entries_seen = entries_seen + 1000",
            "claims entries up to id",
        ),
        # the watermark moved over the new transfer's entries, so as to skip them
        (
            "UPDATE verify_runs SET entries_settled = (SELECT max(id) FROM entries),"
            " entries_seen = (SELECT max(id) FROM entries)",
            "account mark disagrees with the account's entries",
        ),
        # a balance drift covered by the same drift in the account's mark
        (
            f"UPDATE accounts SET posted_credits = posted_credits + 7 WHERE id = '{b['id']}';"
            " UPDATE verify_account_marks SET posted_credits = posted_credits + 7"
            f" WHERE account_id = '{b['id']}'",
            "account mark disagrees with the account's entries",
        ),
    ]
    for statement, reason in forgeries:
        behind_the_back(sync_db, statement)
        refused = await verify(settings, "--since-last")
        assert refused.returncode == 1, (statement, refused.stdout, refused.stderr)
        lines = refused.stdout.splitlines()
        assert all(line.startswith("verify marks: ") for line in lines), lines
        assert any(reason in line for line in lines), lines
        assert "nothing was checked beyond them: run a full `ledger verify`" in lines[-1]
        assert "ok:" not in refused.stderr
        assert len(runs(sync_db)) == 1
        settled, seen, events = recorded
        behind_the_back(
            sync_db,
            f"UPDATE verify_runs SET entries_settled = {settled}, entries_seen = {seen},"
            f" events_settled = {events}",
        )
    # the drift itself is a violation the full run names
    full = await verify(settings)
    assert full.returncode == 1
    assert any(
        "posted balance differs" in line and b["id"] in line for line in full.stdout.splitlines()
    )


async def test_a_run_waits_for_the_transactions_open_when_it_began(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any], db_url: str
) -> None:
    """Ids are handed out before commit: an account and its first event written by a
    transaction still open when a run begins have ids below that run's watermarks. The run waits
    for it, so its snapshot holds them and they are checked and marked; a run that did not wait
    would leave them below the watermark unmarked, and the next run would call the account's
    event lost."""
    _source, a, _b, _moved = await busy_ledger(client)
    assert (await verify(settings)).returncode == 0
    late = "018f0000-0000-7000-8000-00000000abcd"
    with psycopg.connect(db_url) as open_tx:  # one transaction, open until committed below
        open_tx.execute(
            "INSERT INTO accounts (id, code, currency, normal_balance, min_balance, status,"
            " metadata, metadata_text, version, posted_debits, posted_credits, pending_debits,"
            " pending_credits, created_at, updated_at)"
            f" SELECT '{late}', 'late-one', currency, normal_balance, min_balance, status,"
            " metadata, metadata_text, 1, 0, 0, 0, 0, now(), now()"
            f" FROM accounts WHERE id = '{a['id']}'"
        )
        open_tx.execute(
            "INSERT INTO outbox_events (event_id, type, subject, sequence, envelope,"
            " envelope_packed, created_at)"
            f" SELECT gen_random_uuid(), type, '{late}', 1, envelope, envelope_packed, now()"
            " FROM outbox_events"
            f" WHERE subject = '{a['id']}' AND sequence = 1"
        )
        env = {
            **os.environ,
            "LEDGER_DATABASE_URL": settings.database_url or "",
            "LEDGER_LOG_LEVEL": "warning",
        }
        run = subprocess.Popen(  # noqa: ASYNC220 - it must run while this test holds open_tx
            [LEDGER, "verify", "--since-last"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_snapshot_xmin%'"
            for _ in range(600):
                row = sync_db.execute(waiting + " AND pid <> pg_backend_pid()").fetchone()
                if (row and row[0]) or run.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            assert run.poll() is None, "the run ended while a transaction it must wait for was open"
            open_tx.commit()
            out, err = await asyncio.to_thread(run.communicate, timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
    assert run.returncode == 0, out + err
    assert checked(subprocess.CompletedProcess([], 0, out, err))["accounts"] == 1, err
    marked = sync_db.execute(
        f"SELECT version FROM verify_account_marks WHERE account_id = '{late}'"
    ).fetchone()
    assert marked == (1,)
    after = await verify(settings, "--since-last")
    assert after.returncode == 0, after.stdout + after.stderr


async def test_a_run_that_finds_another_recording_checks_and_records_nothing(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    await busy_ledger(client)
    assert (await verify(settings)).returncode == 0
    lock = (int(LockClass.VERIFY_RUN), SINGLETON_KEY)
    sync_db.execute("SELECT pg_advisory_lock(%s, %s)", lock)
    try:
        beside = await verify(settings, "--since-last")
    finally:
        sync_db.execute("SELECT pg_advisory_unlock(%s, %s)", lock)
    assert beside.returncode == 0, beside.stdout + beside.stderr
    assert "another ledger verify is recording its run: this one is not" in beside.stderr
    assert "ok: every ledger invariant holds" in beside.stderr
    assert [kind for _, kind, _ in runs(sync_db)] == ["full"]
