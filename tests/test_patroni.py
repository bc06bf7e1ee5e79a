"""The service under Patroni (contract 9.3; docs/scaling.md): Patroni 3.0 with etcd manages a
primary and a synchronous standby (tests/patroni.py); `ledger db upgrade`, `serve` and `worker`
connect through libpq's list of both nodes with `target_session_attrs=read-write`.

Under load from idempotent clients, the leader's machine dies: its Patroni and its postmaster
SIGKILLed together, so its leader key in etcd expires and the other node takes over (its
`synchronous_standby_names` emptied by Patroni, having no standby left). Nothing is restarted:
every acknowledged transfer is stored exactly once and nothing else, the clients saw 503 and
never another 5xx or a wrong answer, `ledger verify` is clean and every event reaches the feed.
tests/test_failover.py checks the same failover in more depth with a plain `pg_ctl promote`; this
one shows it under the manager people run, with its real decision time (the leader TTL)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from ledger.embedded import LOOPBACK, free_port
from tests.load_clients import Load, fund, open_accounts, transfer_client
from tests.patroni import PatroniCluster
from tests.processes import ledger_env, stop, wait_until_ready
from tests.test_failover import ADMIN, check_stored_exactly_once, run, spawn, wait_for

WRITERS = 6
LOAD_SECONDS = 3.0  # before the crash, and again once the new leader answers


@pytest.fixture
def cluster(pg_server: str) -> Iterator[PatroniCluster]:
    """`pg_server`: the suite's own server made the system user PostgreSQL runs as."""
    managed = PatroniCluster(Path(tempfile.mkdtemp(prefix="ledger-test-patroni-")))
    try:
        yield managed.start()
    finally:
        managed.stop()


async def drive(base_url: str, cluster: PatroniCluster) -> tuple[Load, dict[str, float]]:
    load, marks = Load(), {}
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as http:
        accounts = await open_accounts(http, load, 4)
        await fund(http, load, accounts, 100_000)
        stop_load = asyncio.Event()
        tasks = [
            asyncio.create_task(transfer_client(http, load, accounts, stop_load, seed))
            for seed in range(WRITERS)
        ]
        await asyncio.sleep(LOAD_SECONDS)
        old = cluster.leader()
        cluster.crash(old)
        marks["crash"] = time.monotonic()
        await asyncio.to_thread(
            cluster.wait_until,
            lambda roles: roles.get(old.name) != "leader" and ("leader" in roles.values()),
        )
        marks["new_leader"] = time.monotonic()
        await asyncio.sleep(LOAD_SECONDS)
        stop_load.set()
        await asyncio.gather(*tasks)
    return load, marks


async def test_the_service_follows_patroni_when_the_leaders_machine_dies(
    cluster: PatroniCluster, tmp_path: Path
) -> None:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE ledger")
    url = cluster.url("ledger")
    upgraded = run(url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    env = ledger_env(url, LEDGER_ADMIN_KEY=ADMIN, LEDGER_LOG_LEVEL="info")
    port = free_port()
    serve = spawn(["serve", "--host", LOOPBACK, "--port", str(port)], env, tmp_path / "serve.log")
    worker = spawn(["worker"], env, tmp_path / "worker.log")
    try:
        base_url = f"http://{LOOPBACK}:{port}"
        wait_until_ready(serve, base_url, log=tmp_path / "serve.log")
        load, marks = await drive(base_url, cluster)
        await wait_for(
            url,
            "SELECT bool_and(f.id IS NOT NULL) FROM outbox_events e "
            "LEFT JOIN outbox_feed f ON f.id = e.id",
            "feed",
        )
    finally:
        assert stop(worker) == 0
        stop(serve)

    assert not load.wrong, load.wrong[:5]
    assert load.statuses["503"] > 0, load.statuses
    check_stored_exactly_once(url, load)
    verify = run(url, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    outage = load.outage(marks["crash"])
    assert outage is not None
    print(
        f"\npatroni: {len(load.acked)} transfers acknowledged; statuses {dict(load.statuses)};"
        f" crash to new leader {marks['new_leader'] - marks['crash']:.2f} s; the clients saw no"
        f" primary for {outage[1] - outage[0]:.2f} s"
    )
