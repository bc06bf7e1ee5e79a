"""Event delivery under faults, with real processes: a `ledger worker` SIGKILLed in the middle of
a backlog (a standby takes over, the killed one restarts), and the broker paused with SIGSTOP
while transfers keep coming. In every case each committed event reaches Kafka, in per-account
order once duplicates are dropped."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from ledger.core.settings import Settings
from ledger.embedded import EmbeddedBroker
from outbox.kafka import KafkaOptions
from outbox.relay import Relay
from tests.helpers import create_account, funded_pair, transfer
from tests.test_events import (
    DEADLINE_SECONDS,
    LEDGER,
    assert_gapless_sequences,
    drain,
    first_deliveries,
    kafka_settings,
    ledger_env,
    outbox_rows,
    read_topic,
    wait_until,
)

BACKLOG_TRANSFERS = 600  # x 3 events each: four relay steps of 500
LEADER_SQL = """
    SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'ledger-relay-%%'
"""


def _count(db: psycopg.Connection[Any], where: str) -> int:
    value = db.execute(
        f"SELECT count(*) FROM outbox_events e LEFT JOIN outbox_feed f ON f.id = e.id WHERE {where}"
    ).fetchone()
    return int(value[0]) if value else 0


async def _spawn_worker(settings: Settings, log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log_file:
        return await asyncio.create_subprocess_exec(
            LEDGER,
            "worker",
            env=ledger_env(settings),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
        )


async def _make_backlog(client: AsyncTestClient[Any]) -> None:
    source = await create_account(client, normal_balance="debit", min_balance=None)
    accounts = [await create_account(client) for _ in range(8)]
    items = [
        {
            "debit_account_id": source["id"],
            "credit_account_id": accounts[i % len(accounts)]["id"],
            "amount": 1 + i % 7,
        }
        for i in range(BACKLOG_TRANSFERS)
    ]
    response = await client.post("/v1/transfers/batch", json={"atomic": False, "transfers": items})
    assert response.status_code == 200, response.text
    assert all(r["status"] == 201 for r in response.json()["results"])


async def test_relay_killed_mid_backlog_loses_nothing(
    client: AsyncTestClient[Any],
    settings: Settings,
    broker: EmbeddedBroker,
    sync_db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    ksettings = kafka_settings(settings, broker)
    await _make_backlog(client)
    total = len(outbox_rows(sync_db))
    workers = [
        await _spawn_worker(ksettings, tmp_path / "first.log"),
        await _spawn_worker(ksettings, tmp_path / "second.log"),
    ]
    try:
        # Whichever worker won the lock starts publishing; kill it as soon as it has begun.
        await wait_until(lambda: _count(sync_db, "f.id IS NOT NULL") > 0, "a first batch")
        (leader_name,) = sync_db.execute(LEADER_SQL).fetchone() or ("",)
        leader = next(w for w in workers if leader_name == f"ledger-relay-{w.pid}")
        leader.send_signal(signal.SIGKILL)
        await leader.wait()
        published_at_kill = _count(sync_db, "f.id IS NOT NULL")
        assert 0 < published_at_kill < total, "the kill must land in the middle of the backlog"
        # The survivor takes over; then the killed worker restarts, finds it leading and
        # stands by. (Restarted before the takeover, it could win the lock itself.)
        survivor = next(w for w in workers if w is not leader)

        def survivor_leads() -> bool:
            row = sync_db.execute(LEADER_SQL).fetchone()
            return row is not None and row[0] == f"ledger-relay-{survivor.pid}"

        await wait_until(survivor_leads, "the survivor to take over")
        restarted_log = tmp_path / "restarted.log"
        workers.append(await _spawn_worker(ksettings, restarted_log))
        await wait_until(lambda: _count(sync_db, "f.id IS NULL") == 0, "the backlog")
        await wait_until(
            lambda: restarted_log.exists() and '"relay.standby"' in restarted_log.read_text(),
            "the restarted worker to stand by",
        )
        assert survivor_leads()
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            await asyncio.wait_for(worker.wait(), DEADLINE_SECONDS)
    assert [w.returncode for w in workers] == [
        -signal.SIGKILL if w is leader else 0 for w in workers
    ]

    rows = outbox_rows(sync_db)
    assert sorted(r[3] for r in rows) == list(range(1, total + 1))  # gapless feed positions
    records = await read_topic(ksettings)
    by_key = first_deliveries(records)
    assert {e["id"] for envelopes in by_key.values() for e in envelopes} == {r[0] for r in rows}
    assert assert_gapless_sequences(by_key) == 9  # the source and its eight customers
    assert len(records) >= total  # at least once: a batch published before the kill comes again


async def test_broker_paused_then_resumed_publishes_everything(
    client: AsyncTestClient[Any],
    settings: Settings,
    broker: EmbeddedBroker,
    sync_db: psycopg.Connection[Any],
) -> None:
    ksettings = kafka_settings(settings, broker)
    relay = Relay(ksettings, options=KafkaOptions(request_timeout_ms=1_500, retry_backoff_ms=100))
    _source, a, b = await funded_pair(client, 1_000)
    try:
        await drain(relay)  # connected, topic created, the first events out
        failures_before = REGISTRY.get_sample_value("ledger_outbox_publish_failures_total") or 0
        broker.pause()
        try:
            for amount in range(1, 6):  # the API keeps accepting transfers meanwhile
                assert (await transfer(client, a["id"], b["id"], amount)).status_code == 201
            assert await relay.step() == 0  # the publish times out: nothing marked
            assert _count(sync_db, "f.id IS NULL") == 15
        finally:
            broker.resume()
        failures = REGISTRY.get_sample_value("ledger_outbox_publish_failures_total") or 0
        assert failures > failures_before
        stop_at = time.monotonic() + DEADLINE_SECONDS
        while _count(sync_db, "f.id IS NULL") and time.monotonic() < stop_at:
            if not await relay.step():
                await asyncio.sleep(0.1)  # waiting out the relay's backoff
    finally:
        await relay.close()
    assert _count(sync_db, "f.id IS NULL") == 0
    rows = outbox_rows(sync_db)
    by_key = first_deliveries(await read_topic(ksettings))
    assert {e["id"] for envelopes in by_key.values() for e in envelopes} == {r[0] for r in rows}
    assert assert_gapless_sequences(by_key) == 3
