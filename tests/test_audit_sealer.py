"""Sealing under load: two real `ledger worker` processes (one active sealer, one standby), many
concurrent writers, the active sealer hung with SIGSTOP and later the other killed with SIGKILL.
Every record ends up sealed exactly once, in one gapless chain that verifies."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from ledger.audit.repository import SEALER_LOCK
from tests.audit_helpers import LEDGER, cli_env
from tests.helpers import create_account, transfer

WRITERS = 24  # concurrent clients
TRANSFERS_PER_ROUND = 100
WAIT_SECONDS_MAX = 60
POLL_SECONDS = 0.2

ACTIVE_SEALER_SQL = """
SELECT a.application_name
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
       SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid = %s AND l.objid = %s AND l.objsubid = 2
"""


@pytest.fixture
def workers(db_url: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    with tempfile.TemporaryFile() as logs:
        started = [
            subprocess.Popen(
                [LEDGER, "worker"], env=cli_env(db_url), stdout=logs, stderr=subprocess.STDOUT
            )
            for _ in range(2)
        ]
        try:
            yield started
        finally:
            for process in started:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in started:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _active_sealers(db: psycopg.Connection[Any]) -> list[int]:
    """OS pids of the workers holding the sealer lock (their connections' application_name)."""
    rows = db.execute(ACTIVE_SEALER_SQL, (SEALER_LOCK["lock_class"], SEALER_LOCK["key"])).fetchall()
    return [int(name.rpartition(":")[2]) for (name,) in rows if name.startswith("ledger-sealer:")]


async def _wait_for(check: Any, what: str) -> Any:
    for _ in range(int(WAIT_SECONDS_MAX / POLL_SECONDS)):
        value = check()
        if value:
            return value
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"gave up waiting for {what}")


def _chain_counts(db: psycopg.Connection[Any]) -> tuple[int, int, int, int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM audit_records), (SELECT count(*) FROM audit_seals), "
        "(SELECT count(DISTINCT record_id) FROM audit_seals), "
        "(SELECT coalesce(max(seq), 0) FROM audit_seals), "
        "(SELECT count(*) FROM audit_records r WHERE NOT EXISTS "
        "   (SELECT 1 FROM audit_seals s WHERE s.record_id = r.id))"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3], row[4]


async def _write_round(client: AsyncTestClient[Any], accounts: list[dict[str, Any]]) -> int:
    """TRANSFERS_PER_ROUND transfers between random accounts from WRITERS concurrent clients."""
    gate = asyncio.Semaphore(WRITERS)
    rng = random.Random(len(accounts))

    async def one() -> int:
        debit, credit = rng.sample(accounts, 2)
        async with gate:
            response = await transfer(client, debit["id"], credit["id"], rng.randint(1, 5))
        assert response.status_code == 201, response.text
        return 1

    return sum(await asyncio.gather(*(one() for _ in range(TRANSFERS_PER_ROUND))))


async def _sealed(db: psycopg.Connection[Any], what: str) -> int:
    """Waits until no record is unsealed; returns the chain head's seq."""
    head: int = await _wait_for(lambda: (c := _chain_counts(db))[4] == 0 and c[3], what)
    return head


async def test_every_record_is_sealed_once_with_two_workers_hung_and_killed(
    client: AsyncTestClient[Any],
    sync_db: psycopg.Connection[Any],
    workers: list[subprocess.Popen[bytes]],
) -> None:
    pids = {w.pid for w in workers}
    accounts = [await create_account(client, min_balance=None) for _ in range(8)]
    [first] = await _wait_for(lambda: _active_sealers(sync_db), "an active sealer")
    assert first in pids
    assert await _write_round(client, accounts) == TRANSFERS_PER_ROUND
    head = await _sealed(sync_db, "the first round to be sealed")
    assert _active_sealers(sync_db) == [first]

    # The active sealer hangs (SIGSTOP): PostgreSQL drops its idle connection, the lock with it,
    # and the standby takes over while writes go on.
    os.kill(first, signal.SIGSTOP)
    try:
        written = asyncio.create_task(_write_round(client, accounts))
        [second] = await _wait_for(
            lambda: [p for p in _active_sealers(sync_db) if p != first], "the standby to take over"
        )
        assert second in pids - {first}
        assert await written == TRANSFERS_PER_ROUND
        assert await _sealed(sync_db, "the second round to be sealed") >= head + TRANSFERS_PER_ROUND
        head = _chain_counts(sync_db)[3]
    finally:
        os.kill(first, signal.SIGCONT)

    # Woken up, the first finds its connection gone and stands by; then the second dies outright
    # (SIGKILL) and the first takes over again.
    await _wait_for(lambda: _active_sealers(sync_db) == [second], "only one active sealer")
    os.kill(second, signal.SIGKILL)
    written = asyncio.create_task(_write_round(client, accounts))
    await _wait_for(lambda: _active_sealers(sync_db) == [first], "the first to take over again")
    assert await written == TRANSFERS_PER_ROUND
    assert await _sealed(sync_db, "the third round to be sealed") >= head + TRANSFERS_PER_ROUND

    records_n, seals_n, distinct_n, head, unsealed = _chain_counts(sync_db)
    assert records_n >= 3 * TRANSFERS_PER_ROUND + len(accounts)
    assert records_n == seals_n == distinct_n == head
    assert unsealed == 0
    response = await client.get("/v1/audit/verify")
    assert response.status_code == 200
    report = response.json()
    assert report["ok"] is True, report
    assert report["checked"] == records_n
