"""A synchronous standby takes over with nothing lost (contract 9.3), with real processes.

A primary and a synchronous standby (tests/replication.py); `ledger db upgrade`, `ledger serve`
and `ledger worker` all on libpq's two-host URL with `target_session_attrs=read-write`; clients
posting transfers with Idempotency-Keys and retrying through every ambiguous answer, and readers
reading acknowledged transfers back. Mid-load the primary's postmaster is SIGKILLed; a moment
later (the time a manager such as Patroni takes to decide) the standby is promoted with
`pg_ctl promote`, and nothing is restarted: every process finds the new primary by itself.

Then: every acknowledged transfer is stored exactly once and nothing else was made; the service
answered 503 with Retry-After while there was no primary, never another 5xx, never a wrong
answer; every worker job that lost the database found it again, and a hold due after the
promotion was expired; `ledger verify` and `ledger audit verify --checkpoints` are clean; every
event reached Kafka (the real broker) with no gap in any account's sequence, and the feed's
positions run without a gap. The time without a primary, as the clients saw it, is printed
(`-s`)."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ledger.core.settings import Settings
from ledger.embedded import LOOPBACK, EmbeddedBroker, free_port
from tests.audit_merkle_helpers import write_public_key
from tests.load_clients import (
    Acked,
    Load,
    fund,
    open_accounts,
    post_until_definite,
    read_client,
    transfer_client,
)
from tests.processes import LEDGER, ledger_env, stop, wait_until_ready
from tests.replication import ReplicatedPair
from tests.test_events import assert_gapless_sequences, first_deliveries, read_topic

ADMIN = "lk_test_admin_secret_0123456789"
ACCOUNTS = 8
FUNDING = 100_000
WRITERS = 8
READERS = 2
LOAD_BEFORE_KILL_SECONDS = 3.0
NO_PRIMARY_SECONDS = 1.0  # between the kill and the promotion: a manager's decision time
HOLD_TIMEOUT_SECONDS = 3  # due after the promotion
LOAD_AFTER_PROMOTION_SECONDS = 3.0
DRAIN_DEADLINE_SECONDS = 90.0  # an upper bound on waits for real processes, never a timing assert


@pytest.fixture
def pair() -> Iterator[ReplicatedPair]:
    replicated = ReplicatedPair(Path(tempfile.mkdtemp(prefix="ledger-test-failover-"))).start()
    try:
        yield replicated
    finally:
        replicated.remove()


def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEDGER, *args],
        env=ledger_env(url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [LEDGER, *args], env=env, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True
        )


def scalar(url: str, sql: str) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        return None if row is None else row[0]


async def wait_for(url: str, sql: str, what: str) -> None:
    """Until `sql` is true on the primary (the worker draining its backlog after a failover)."""
    deadline = time.monotonic() + DRAIN_DEADLINE_SECONDS
    while not await asyncio.to_thread(scalar, url, sql):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.2)


async def drive(base_url: str, pair: ReplicatedPair) -> tuple[Load, dict[str, float]]:
    """Load before, during and after the failover; returns what the clients saw and when the
    kill and the promotion happened."""
    load = Load()
    marks: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {ADMIN}"}
    limits = httpx.Limits(max_connections=WRITERS + READERS + 2)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits) as http:
        accounts = await open_accounts(http, load, ACCOUNTS)
        await fund(http, load, accounts, FUNDING)
        stop_load = asyncio.Event()
        clients = [
            *(transfer_client(http, load, accounts, stop_load, seed) for seed in range(WRITERS)),
            *(read_client(http, load, stop_load, seed) for seed in range(READERS)),
        ]
        tasks = [asyncio.create_task(c) for c in clients]
        await asyncio.sleep(LOAD_BEFORE_KILL_SECONDS)
        await hold_expiring_after_the_failover(http, load, accounts)
        marks["acked_before_kill"] = len(load.acked)
        pair.kill_primary()
        marks["kill"] = time.monotonic()
        await asyncio.sleep(NO_PRIMARY_SECONDS)
        await asyncio.to_thread(pair.promote)
        marks["promoted"] = time.monotonic()
        await asyncio.sleep(LOAD_AFTER_PROMOTION_SECONDS)
        stop_load.set()
        await asyncio.gather(*tasks)  # each writer resolves its last transfer before it stops
    return load, marks


HOLD_REF = "hold-expiring-after-the-failover"


async def hold_expiring_after_the_failover(
    http: httpx.AsyncClient, load: Load, accounts: list[str]
) -> None:
    """A pending transfer due to expire once the standby has taken over: the expiry job must
    find the new primary to void it."""
    body = {
        "debit_account_id": accounts[0],
        "credit_account_id": accounts[1],
        "amount": 1,
        "pending": True,
        "timeout_seconds": HOLD_TIMEOUT_SECONDS,
        "metadata": {"ref": HOLD_REF},
    }
    response = await post_until_definite(http, load, "/v1/transfers", body, HOLD_REF)
    assert response.status_code == 201, response.text
    load.acked[HOLD_REF] = Acked(response.json()["id"], accounts[0], accounts[1], 1)


def jobs_away_and_back(log: Path) -> tuple[set[str], set[str]]:
    """From the worker's log: the jobs whose step found the database away, and those of them
    whose last word is still that (they never came back)."""
    went: set[str] = set()
    away: set[str] = set()
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("event") == "worker.step_unavailable":
            went.add(record["job"])
            away.add(record["job"])
        elif record.get("event") == "worker.step_available":
            away.discard(record["job"])
    return went, away


def check_stored_exactly_once(url: str, load: Load) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT metadata->>'ref', id::text, debit_account_id::text, credit_account_id::text,"
            " amount FROM transfers"
        ).fetchall()
    refs = Counter(ref for ref, *_ in rows)
    assert not [ref for ref, n in refs.items() if n > 1], "a transfer was made twice"
    assert set(refs) == set(load.acked), "stored transfers differ from the acknowledged ones"
    for ref, transfer_id, debit, credit, amount in rows:
        acked = load.acked[ref]
        assert (transfer_id, debit, credit, amount) == (
            acked.transfer_id,
            acked.debit,
            acked.credit,
            acked.amount,
        )


async def check_events(url: str, settings: Settings) -> int:
    """Every event on Kafka, each account's sequence gapless, the feed's positions gapless."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT e.event_id::text, f.position FROM outbox_events e "
            "LEFT JOIN outbox_feed f ON f.id = e.id"
        ).fetchall()
    assert sorted(position for _, position in rows) == list(range(1, len(rows) + 1))
    by_key = first_deliveries(await read_topic(settings))
    assert {e["id"] for envelopes in by_key.values() for e in envelopes} == {r[0] for r in rows}
    return assert_gapless_sequences(by_key)


async def test_a_synchronous_standby_takes_over_with_nothing_lost(
    pair: ReplicatedPair, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    url = pair.url()
    upgraded = run(url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    topic = f"ledger.events.failover.{uuid.uuid4().hex[:8]}"
    checkpoints = tmp_path / "checkpoints.jsonl"
    env = ledger_env(
        url,
        LEDGER_ADMIN_KEY=ADMIN,
        LEDGER_LOG_LEVEL="info",
        LEDGER_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        LEDGER_KAFKA_TOPIC=topic,
        LEDGER_KAFKA_CHECKPOINT_TOPIC=f"{topic}.checkpoints",
        LEDGER_AUDIT_CHECKPOINT_FILE=str(checkpoints),
    )
    port = free_port()
    serve = spawn(["serve", "--host", LOOPBACK, "--port", str(port)], env, tmp_path / "serve.log")
    worker = spawn(["worker"], env, tmp_path / "worker.log")
    try:
        base_url = f"http://{LOOPBACK}:{port}"
        wait_until_ready(serve, base_url, log=tmp_path / "serve.log")
        load, marks = await drive(base_url, pair)
        # The worker follows the new primary by itself: the backlog of the outage reaches the
        # feed and Kafka, every audit record is sealed, a checkpoint covers them all.
        await wait_for(
            url,
            "SELECT bool_and(f.id IS NOT NULL) FROM outbox_events e "
            "LEFT JOIN outbox_feed f ON f.id = e.id",
            "events",
        )
        await wait_for(
            url,
            "SELECT NOT EXISTS (SELECT FROM audit_records r WHERE NOT EXISTS"
            " (SELECT FROM audit_seals s WHERE s.record_id = r.id))"
            " AND (SELECT max(tree_size) FROM audit_checkpoints)"
            " = (SELECT count(*) FROM audit_seals)",
            "every record sealed and checkpointed",
        )
        # The checkpoints' Kafka target has taken every checkpoint (its position is per target).
        await wait_for(
            url,
            "SELECT coalesce((SELECT delivered_size FROM audit_checkpoint_targets"
            f" WHERE target = 'kafka:{topic}.checkpoints'), 0)"
            " = (SELECT max(tree_size) FROM audit_checkpoints)",
            "every checkpoint delivered to Kafka",
        )
        await wait_for(
            url,
            f"SELECT state = 'expired' FROM transfers WHERE metadata->>'ref' = '{HOLD_REF}'",
            "the hold to expire",
        )
    finally:
        assert stop(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught
        assert stop(serve) in (0, -15)

    assert not load.wrong, load.wrong[:5]
    assert load.statuses["503"] > 0, f"no 503 while there was no primary: {load.statuses}"
    assert len(load.acked) > marks["acked_before_kill"] > ACCOUNTS
    check_stored_exactly_once(url, load)
    went, still_away = jobs_away_and_back(tmp_path / "worker.log")
    assert {"outbox-relay", "audit-sealer"} <= went, went
    assert not still_away, still_away

    verify = run(url, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    pem = write_public_key(tmp_path)
    audit = run(url, "audit", "verify", "--checkpoints", str(checkpoints), "--public-key", str(pem))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(audit.stdout)["checkpoints_checked"] >= 1

    settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, kafka_topic=topic)
    assert await check_events(url, settings) == ACCOUNTS + 1  # the source and the customers

    outage = load.outage(marks["kill"])
    assert outage is not None and not math.isnan(outage[1]), load.statuses
    first_failure, back = outage
    print(
        f"\nfailover: {len(load.acked)} transfers acknowledged ({marks['acked_before_kill']:.0f}"
        f" before the kill), {load.refused} refused; statuses {dict(load.statuses)}; kill to"
        f" promotion {marks['promoted'] - marks['kill']:.2f} s; the clients saw no primary for"
        f" {back - first_failure:.2f} s (first failure {first_failure - marks['kill']:.2f} s"
        f" after the kill, first acknowledgement {back - marks['promoted']:.2f} s after the"
        " promotion)"
    )
