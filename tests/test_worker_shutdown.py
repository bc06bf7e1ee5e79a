"""`ledger worker` told to stop in the middle of a sealing backlog: the sealer ends its pass at
the next batch's commit rather than at the end of the backlog, the process exits 0, nothing
committed is lost, and the next sealer seals the rest into a chain that verifies."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from ledger.core import limits
from ledger.core.settings import Settings
from tests.audit_helpers import seal_all
from tests.processes import ledger_env, stop

# Many more records than one sealer batch holds: a pass through them is many transactions.
BACKLOG = 12 * limits.AUDIT_SEAL_BATCH_SIZE
DEADLINE_SECONDS = 120.0  # a bound on waiting for a real process, never a timing assert


def _count(db: psycopg.Connection[Any], table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[call-overload]
    assert row is not None
    return int(row[0])


def _events(log: Path) -> list[str]:
    found = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            found.append(json.loads(line)["event"])
        except (ValueError, KeyError):
            continue
    return found


def _start_worker(db_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "worker"],
            env=ledger_env(db_url, LEDGER_LOG_LEVEL="info"),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )


async def test_a_worker_stops_inside_a_sealing_backlog_and_the_next_pass_seals_the_rest(
    client: httpx.AsyncClient,
    settings: Settings,
    db_url: str,
    sync_db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    sync_db.execute(
        "INSERT INTO audit_records (id, at, actor_name, action, object_type, object_id, data)"
        " SELECT gen_random_uuid(), now(), 'backlog', 'test.backlog', 'test', 'o' || n, '{}'"
        "   FROM generate_series(1, %s) AS n",
        (BACKLOG,),
    )
    records = _count(sync_db, "audit_records")
    log = tmp_path / "worker.log"
    worker = _start_worker(db_url, log)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while _count(sync_db, "audit_seals") == 0:  # the first batch of the pass committed
            assert worker.poll() is None, log.read_text(encoding="utf-8")[-2000:]
            assert time.monotonic() < deadline, "the worker never sealed"
            await asyncio.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(DEADLINE_SECONDS) == 0, log.read_text(encoding="utf-8")[-2000:]
    finally:
        stop(worker)
    events = _events(log)
    # It stopped at a batch's end, not at the backlog's: the pass says it was cut.
    assert "worker.stopping" in events and "audit.sealer_pass_cut" in events, events
    assert events.index("worker.stopping") < events.index("audit.sealer_pass_cut")
    assert events[-1] == "worker.stopped", events
    cut_at = _count(sync_db, "audit_seals")
    assert 0 < cut_at < records

    # What it committed stays; the next sealer resumes from the chain head and seals the rest.
    assert await seal_all(settings) == records - cut_at
    report = (await client.get("/v1/audit/verify")).json()
    assert report["ok"] is True and report["unsealed"] == 0, report
