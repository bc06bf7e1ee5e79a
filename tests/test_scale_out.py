"""Several API hosts and workers on one database, through a pooler (contract 9.3), with real
processes: two `ledger serve` behind HAProxy, their request path through PgBouncer in
transaction mode, two `ledger worker`s with their session state (leader locks, LISTEN) on direct
connections, and the broker.

Under load from idempotent clients, the worker holding the relay's lock is SIGKILLed, then one
of the API processes. Then: every acknowledged transfer stored exactly once and nothing else,
each account's entry sequence and event sequence gapless, the feed's positions gapless, at no
moment two relays or two sealers, the surviving worker leading both at the end, and
`ledger verify` and `ledger audit verify` clean. The throughput the clients saw is printed
(`-s`); `docs/scaling.md` has longer runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from ledger.core.settings import Settings
from ledger.embedded import LOOPBACK, EmbeddedBroker, free_port
from tests.load_clients import Load, fund, open_accounts, read_client, transfer_client
from tests.pooler_fixtures import through
from tests.poolers import HAProxy, PgBouncer
from tests.processes import ledger_env, stop, wait_until_ready
from tests.test_failover import (
    ADMIN,
    check_events,
    check_stored_exactly_once,
    run,
    spawn,
    wait_for,
)

ACCOUNTS = 8
FUNDING = 100_000
WRITERS = 12
READERS = 2
PHASE_SECONDS = 3.0  # load before the worker kill, between the kills, after the API kill
HOLDERS_SQL = """
    SELECT l.classid::int, a.application_name FROM pg_locks l
      JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.classid IN (2, 3) AND l.objsubid = 2
       AND a.datname = current_database()
"""  # classid: the lock class (OUTBOX_RELAY 2, AUDIT_SEALER 3) of the two-key form


def holders(url: str) -> dict[int, list[str]]:
    """Application names holding the relay's (2) and the sealer's (3) lock, by lock class."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(HOLDERS_SQL).fetchall()
    found: dict[int, list[str]] = {2: [], 3: []}
    for lock_class, name in rows:
        found[lock_class].append(name)
    return found


def pid_of(name: str) -> int:
    """`ledger-relay-PID` or `ledger-sealer:PID`."""
    return int(name.replace(":", "-").rsplit("-", 1)[1])


async def watch_singletons(url: str, stop_watch: asyncio.Event, seen: list[dict[int, Any]]) -> None:
    while not stop_watch.is_set():
        seen.append(await asyncio.to_thread(holders, url))
        await asyncio.sleep(0.2)


def entry_sequence_gaps(url: str) -> int:
    """Entries whose sequence is not the one after the account's previous one. An account's
    sequence counts its versions (1: created); nothing but entries changes one here, so its
    entries run 2, 3, 4, ... with no gap."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM (SELECT sequence, row_number() OVER"
            " (PARTITION BY account_id ORDER BY sequence) AS n FROM entries) s"
            " WHERE sequence <> n + 1"
        ).fetchone()
    return int(row[0]) if row else -1


async def test_two_apis_behind_haproxy_and_two_workers_through_pgbouncer(
    settings: Settings, pgbouncer: PgBouncer, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    direct = settings.database_url or ""
    pooled = through(pgbouncer, settings)
    topic = f"ledger.events.scale.{uuid.uuid4().hex[:8]}"
    env = ledger_env(
        pooled.database_url or "",
        LEDGER_DATABASE_DIRECT_URL=direct,
        LEDGER_ADMIN_KEY=ADMIN,
        LEDGER_LOG_LEVEL="info",
        LEDGER_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        LEDGER_KAFKA_TOPIC=topic,
        LEDGER_KAFKA_CHECKPOINT_TOPIC=f"{topic}.checkpoints",
    )
    ports = [free_port(), free_port()]
    apis = [
        spawn(["serve", "--host", LOOPBACK, "--port", str(p)], env, tmp_path / f"serve{n}.log")
        for n, p in enumerate(ports)
    ]
    workers = [spawn(["worker"], env, tmp_path / f"worker{n}.log") for n in range(2)]
    balancer = HAProxy(tmp_path / "haproxy", ports)
    seen: list[dict[int, Any]] = []
    load = Load(ambiguous=frozenset({502, 503}))
    try:
        for api, port in zip(apis, ports, strict=True):
            wait_until_ready(api, f"http://{LOOPBACK}:{port}")
        balancer.start()
        stop_watch = asyncio.Event()
        watcher = asyncio.create_task(watch_singletons(direct, stop_watch, seen))
        killed = await drive(balancer.url, load, apis, workers, direct)
        await wait_for(
            direct,
            "SELECT bool_and(f.id IS NOT NULL) FROM outbox_events e "
            "LEFT JOIN outbox_feed f ON f.id = e.id",
            "feed",
        )
        await wait_for(
            direct,
            "SELECT NOT EXISTS (SELECT FROM audit_records r WHERE NOT EXISTS"
            " (SELECT FROM audit_seals s WHERE s.record_id = r.id))",
            "every record sealed",
        )
        stop_watch.set()
        await watcher
        at_end = holders(direct)
    finally:
        balancer.stop()
        for process in [*apis, *workers]:
            stop(process)

    assert not load.wrong, load.wrong[:5]
    check_stored_exactly_once(direct, load)
    assert entry_sequence_gaps(direct) == 0
    events = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, kafka_topic=topic)
    assert await check_events(direct, events) == ACCOUNTS + 1
    assert all(len(names) <= 1 for sample in seen for names in sample.values()), seen
    survivor = next(w for w in workers if w.pid != killed)
    assert [pid_of(n) for n in at_end[2]] == [survivor.pid], at_end
    assert [pid_of(n) for n in at_end[3]] == [survivor.pid], at_end
    for args in (("verify",), ("audit", "verify")):
        result = run(direct, *args)
        assert result.returncode == 0, result.stdout + result.stderr


async def drive(
    base_url: str,
    load: Load,
    apis: list[subprocess.Popen[bytes]],
    workers: list[subprocess.Popen[bytes]],
    direct: str,
) -> int:
    """Load through the balancer; SIGKILL the relay's worker, then one API. Returns the pid of
    the worker killed."""
    headers = {"Authorization": f"Bearer {ADMIN}"}
    limits = httpx.Limits(max_connections=WRITERS + READERS + 2)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits) as http:
        accounts = await open_accounts(http, load, ACCOUNTS)
        await fund(http, load, accounts, FUNDING)
        stop_load = asyncio.Event()
        tasks = [
            *(
                asyncio.create_task(transfer_client(http, load, accounts, stop_load, seed))
                for seed in range(WRITERS)
            ),
            *(asyncio.create_task(read_client(http, load, stop_load, n)) for n in range(READERS)),
        ]
        started, acked_at_start = time.monotonic(), len(load.acked)
        await asyncio.sleep(PHASE_SECONDS)
        relay = holders(direct)[2]
        assert len(relay) == 1, relay
        killed = pid_of(relay[0])
        os.kill(killed, signal.SIGKILL)
        await asyncio.sleep(PHASE_SECONDS)
        os.killpg(apis[0].pid, signal.SIGKILL)
        await asyncio.sleep(PHASE_SECONDS)
        stop_load.set()
        await asyncio.gather(*tasks)
        took = time.monotonic() - started
    assert killed in {w.pid for w in workers}
    print(
        f"\nscale-out: {len(load.acked) - acked_at_start} transfers acknowledged in {took:.1f} s"
        f" ({(len(load.acked) - acked_at_start) / took:.0f}/s) through HAProxy and PgBouncer,"
        f" worker {killed} and one API killed on the way; statuses {dict(load.statuses)}"
    )
    return killed
