"""Webhook delivery under faults, with real processes: two `ledger worker`s (their relays and
webhook dispatchers), the active one SIGKILLed in the middle of a burst, then PostgreSQL
stopped hard and started again in the middle of the delivery. The receiver sees every event id
(duplicates only across the faults), and per subject the first deliveries keep feed order."""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.cli.main import ensure_admin_key
from ledger.core import migrate
from ledger.embedded import EmbeddedPostgres
from tests.helpers import app_client, create_account
from tests.log_capture import find_secrets
from tests.processes import LEDGER, ledger_env
from tests.webhook_helpers import create_endpoint, feed_envelopes, receiver_settings, wait_for
from tests.webhook_receiver import receiving

TRANSFERS = 480  # 1,440 events: the source account's 480 in one subject, delivered in order
BATCH = 40
LEADER_SQL = """
    SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'ledger-webhooks-%%'
"""


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A server of this test's own: it is stopped hard and started again in the middle."""
    server = EmbeddedPostgres(
        Path(tempfile.mkdtemp(prefix="ledger-webhook-faults-")), fast_unsafe=True
    )
    server.start()
    try:
        migrate.upgrade(server.url("postgres"))
        yield server
    finally:
        server.remove()


async def _spawn_worker(database_url: str, log_path: Path) -> asyncio.subprocess.Process:
    env = ledger_env(
        database_url,
        LEDGER_WEBHOOK_ALLOW_HTTP="true",
        LEDGER_WEBHOOK_ALLOW_PRIVATE="true",
        LEDGER_LOG_LEVEL="info",
    )
    with log_path.open("ab") as log_file:
        return await asyncio.create_subprocess_exec(
            LEDGER, "worker", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log_file
        )


def worker_logs(folder: Path) -> str:
    return "".join(path.read_text() for path in sorted(folder.glob("*.log")))


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """A fresh connection per query: the server goes away in the middle of the test."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as db:
            return list(db.execute(sql).fetchall())
    except psycopg.OperationalError:
        return []


async def test_worker_killed_and_database_restarted_mid_burst_lose_no_event(
    own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    url = own_postgres.url("postgres")
    settings = receiver_settings(url)
    await ensure_admin_key(settings)
    workers: list[asyncio.subprocess.Process] = []
    async with receiving() as receiver, app_client(settings) as client:
        receiver.delay_seconds = 0.004  # a receiver that takes its time: the faults land mid-way
        endpoint = await create_endpoint(client, receiver.url)
        workers += [
            await _spawn_worker(url, tmp_path / "first.log"),
            await _spawn_worker(url, tmp_path / "second.log"),
        ]
        try:
            source = await create_account(client, normal_balance="debit", min_balance=None)
            accounts = [await create_account(client) for _ in range(6)]
            for start in range(0, TRANSFERS, BATCH):
                items = [
                    {
                        "debit_account_id": source["id"],
                        "credit_account_id": accounts[i % len(accounts)]["id"],
                        "amount": 1 + i % 5,
                    }
                    for i in range(start, start + BATCH)
                ]
                response = await client.post(
                    "/v1/transfers/batch", json={"atomic": False, "transfers": items}
                )
                assert response.status_code == 200, response.text
            total = 7 + 3 * TRANSFERS  # account creations, then three events per transfer

            # The active dispatcher, killed once it has delivered some of the burst.
            await wait_for(lambda: len(set(receiver.event_ids())) >= 100, "a first deliveries")
            (leader_name,) = _query(url, LEADER_SQL)[0]
            leader = next(w for w in workers if leader_name == f"ledger-webhooks-{w.pid}")
            leader.send_signal(signal.SIGKILL)
            await leader.wait()
            assert len(set(receiver.event_ids())) < total, "the kill must land mid-burst"

            # The survivor takes over; then PostgreSQL stops hard and starts again.
            seen = len(set(receiver.event_ids()))
            await wait_for(lambda: len(set(receiver.event_ids())) >= seen + 100, "the takeover")
            own_postgres.stop("immediate")
            assert len(set(receiver.event_ids())) < total, "the restart must land mid-delivery"
            await asyncio.sleep(1.0)
            own_postgres.start()
            workers.append(await _spawn_worker(url, tmp_path / "restarted.log"))
            await wait_for(lambda: len(set(receiver.event_ids())) >= total, "every event", 120)
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.send_signal(signal.SIGTERM)
            for worker in workers:
                await asyncio.wait_for(worker.wait(), 60)
    assert [w.returncode for w in workers] == [
        -signal.SIGKILL if w is leader else 0 for w in workers
    ]
    with psycopg.connect(url, autocommit=True) as db:
        fed = feed_envelopes(db)
        head = db.execute(
            "SELECT min(position) - 1 FROM webhook_deliveries WHERE endpoint_id = %s",
            (endpoint["id"],),
        ).fetchone()
    assert head is not None
    expected = {json.loads(e)["id"]: p for p, e in fed if p > head[0]}
    assert len(expected) == total
    assert set(receiver.event_ids()) == set(expected)  # every event, nothing else
    assert len(receiver.requests) >= total  # at least once: some came twice across a fault
    first_positions: dict[str, list[int]] = {}
    seen_ids: set[str] = set()
    for received in receiver.requests:
        event = received.event
        if event["id"] not in seen_ids:
            seen_ids.add(event["id"])
            first_positions.setdefault(event["subject"], []).append(expected[event["id"]])
    assert all(p == sorted(p) for p in first_positions.values())
    # The workers logged their work (leading, lanes, takeover), and never the secret.
    logs = worker_logs(tmp_path)
    assert '"webhook.dispatcher_leading"' in logs
    secret = endpoint["secret"]
    assert find_secrets(logs.splitlines(), ["whsec_", secret.removeprefix("whsec_")]) == []
