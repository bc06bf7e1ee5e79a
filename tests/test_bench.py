"""`ledger bench` against a real `ledger serve --workers 2` process and a `ledger worker` relaying
to the real broker, as the service runs, and the serve workers themselves.

The smoke runs are short (2-3 s of load): they show the bench runs end to end and that its own
check passes on a correct service. The check is then shown to fail when money is removed or an
acknowledged transfer disappears behind the service's back, so `ok: true` means something.
One server with two worker processes serves the whole module (a cold start is the slow part).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from ledger.bench.check import check_run
from ledger.bench.http import open_client
from ledger.bench.load import run_load
from ledger.bench.options import BenchOptions
from ledger.bench.setup import prepare_ledger
from ledger.embedded import LOOPBACK, EmbeddedBroker, free_port
from tests.conftest import new_database
from tests.processes import ledger_env

ADMIN_KEY = "lk_test_bench_admin_0123456789"
LEDGER = str(Path(sys.executable).with_name("ledger"))
READY_ATTEMPTS_MAX = 600  # x 0.1 s: a cold start on a busy 2-core machine
BENCH_TIMEOUT_SECONDS = 120


SERVE_WORKERS = 2


@dataclass
class Served:
    url: str
    database_url: str
    process: subprocess.Popen[bytes]
    workers: list[int]
    bootstrap: str | None = None
    worker: subprocess.Popen[bytes] | None = None  # `ledger worker`: relay, sealer, expiry


def _serve_env(database_url: str, bootstrap: str | None = None) -> dict[str, str]:
    # Loopback receivers for `--webhooks` (plain http, a private address) are allowed here.
    env = ledger_env(
        database_url,
        LEDGER_ADMIN_KEY=ADMIN_KEY,
        LEDGER_WEBHOOK_ALLOW_HTTP="true",
        LEDGER_WEBHOOK_ALLOW_PRIVATE="true",
    )
    if bootstrap is not None:
        env["LEDGER_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    return env


def _start_serve(database_url: str, *extra: str, bootstrap: str | None = None) -> Served:
    port = free_port()
    process = subprocess.Popen(
        [LEDGER, "serve", "--host", LOOPBACK, "--port", str(port), *extra],
        env=_serve_env(database_url, bootstrap),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://{LOOPBACK}:{port}"
    for _ in range(READY_ATTEMPTS_MAX):
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            pytest.fail(f"ledger serve exited with {process.returncode}: {stderr[-2000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return Served(url, database_url, process, _children(process.pid), bootstrap)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    _stop(process)
    pytest.fail("ledger serve never became ready")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@pytest.fixture(scope="module")
def served(pg_server: str, template_db: str, broker: EmbeddedBroker) -> Iterator[Served]:
    """One API for the module (every bench run makes its own accounts) and one `ledger worker`
    publishing to the broker and sealing the trail. On teardown, SIGTERM to the parent must stop
    every serve worker too."""
    bootstrap = broker.bootstrap_servers
    database_url = new_database(pg_server)
    server = _start_serve(database_url, "--workers", str(SERVE_WORKERS), bootstrap=bootstrap)
    server.worker = subprocess.Popen(
        [LEDGER, "worker"],
        env=_serve_env(database_url, bootstrap),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield server
    finally:
        _stop(server.worker)
        _stop(server.process)
    for _ in range(100):
        if not any(_alive(pid) for pid in server.workers):
            break
        time.sleep(0.1)
    lingering = [pid for pid in server.workers if _alive(pid)]
    if server.process.returncode != 0 or lingering:
        pytest.fail(f"serve exited {server.process.returncode}, workers left: {lingering}")


def _bench(served: Served, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    common = ["--url", served.url, "--key", ADMIN_KEY, "--clients", "4", "--check-sample", "100"]
    common += ["--api-pid", str(served.process.pid)]
    if served.worker is not None:
        common += ["--worker-pid", str(served.worker.pid)]
    done = subprocess.run(
        [LEDGER, "bench", *common, *args],
        env=_serve_env(served.database_url),
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_SECONDS,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines else None
    return done.returncode, report, done.stderr


def test_bench_uniform_run_is_ok(served: Served) -> None:
    code, report, stderr = _bench(served, "--accounts", "20", "--duration", "3", "--seed", "7")
    assert code == 0, stderr
    assert report is not None
    assert report["ok"] is True, stderr
    assert report["transfers_per_s"] > 0
    assert report["errors"] == 0, report["error_codes"]
    assert report["balances_exact"] is True  # no unknown outcome: every account matched
    assert report["checked_transfers"] == min(report["transfers"], 100)
    assert report["p50_ms"] <= report["p99_ms"]
    assert {"transfers_per_s", "p50_ms", "p99_ms", "errors", "ok", "rejected"} <= report.keys()
    _assert_observed(served, report)


def test_bench_with_webhooks_reports_their_lag(served: Served) -> None:
    """Two loopback receivers got every event of the window: the report's webhook lag is a real
    time and nothing is left undelivered; the bench deleted its endpoints afterwards."""
    code, report, stderr = _bench(
        served, "--accounts", "20", "--duration", "3", "--seed", "11", "--webhooks", "2"
    )
    assert code == 0, stderr
    assert report is not None and report["ok"] is True, stderr
    assert report["webhooks"] == 2
    assert report["webhook_backlog"] == 0
    assert report["webhook_deliveries"] >= 2 * report["event_lag_rows"]
    assert report["webhook_lag_p99_ms"] >= 0
    listed = httpx.get(
        f"{served.url}/v1/webhooks", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    )
    assert listed.status_code == 200 and listed.json()["data"] == []


def _assert_observed(served: Served, report: dict[str, Any]) -> None:
    """The worker kept up with the run and the bench saw every component's CPU."""
    assert served.worker is not None and served.worker.poll() is None, "the worker died"
    for component in ("client", "api", "worker", "db"):
        assert report[f"{component}_cpu_ms_per_transfer"] > 0, component
    # Every transfer of the window was published to the broker and its audit record sealed
    # (the bench waited for the worker), and each lag is a real, non-negative time.
    assert report["event_backlog"] == 0
    assert report["seal_backlog"] == 0
    assert report["event_lag_rows"] >= report["transfers"]  # one transfer.created each at least
    assert report["seal_lag_rows"] >= report["transfers"]
    assert report["event_lag_p99_ms"] >= 0
    assert report["seal_lag_p99_ms"] >= 0


def _scratch_databases(database_url: str) -> set[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'ledger_bench_%'")
        return {row[0] for row in rows}


def test_bench_hot_account_run_with_baseline(served: Served) -> None:
    """--hot, plus --baseline: pgbench runs in a scratch database that is gone afterwards."""
    before = _scratch_databases(served.database_url)
    code, report, stderr = _bench(
        served,
        "--accounts",
        "10",
        "--duration",
        "2",
        "--hot",
        "--baseline",
        "--database-url",
        served.database_url,
    )
    assert code == 0, stderr
    assert report is not None
    assert report["ok"] is True, stderr
    assert report["mode"] == "hot"
    assert report["transfers_per_s"] > 0
    assert report["errors"] == 0, report["error_codes"]
    assert report["baseline_tpcb_tps"] > 0
    assert report["baseline_hot_row_tps"] > 0
    rate = report["transfers_per_s"]
    assert report["ratio_hot_row"] == round(rate / report["baseline_hot_row_tps"], 3)
    assert report["ratio_tpcb"] == round(rate / report["baseline_tpcb_tps"], 3)
    assert _scratch_databases(served.database_url) == before


def test_bench_batch_run_with_idempotency_keys_is_ok(served: Served) -> None:
    code, report, stderr = _bench(
        served, "--accounts", "30", "--duration", "2", "--batch", "50", "--idempotency"
    )
    assert code == 0, stderr
    assert report is not None
    assert report["ok"] is True, stderr
    assert report["errors"] == 0, report["error_codes"]
    assert report["transfers"] == 50 * report["requests"]  # 50 transfers in every request
    _assert_observed(served, report)


def test_bench_that_cannot_run_exits_nonzero(served: Served) -> None:
    done = subprocess.run(
        [LEDGER, "bench", "--url", served.url, "--key", "lk_not_a_key_000000000000"],
        env=_serve_env(served.database_url),
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "401" in done.stderr
    assert "lk_not_a_key" not in done.stderr  # the secret is not echoed


def test_bench_rejects_bad_options(served: Served) -> None:
    code, report, stderr = _bench(served, "--accounts", "1", "--duration", "1")
    assert code == 2
    assert report is None
    assert "--accounts" in stderr


async def test_check_fails_when_money_or_an_acked_transfer_is_lost(served: Served) -> None:
    """The bench's oracle: tamper with the database behind the service, the check must see it."""
    options = BenchOptions(
        url=served.url, key=ADMIN_KEY, accounts=3, clients=2, duration_s=0.5, seed=3, check_sample=5
    ).check()
    async with open_client(options.url, options.key, options.clients) as http:
        ledger = await prepare_ledger(http, options)
        tally, _ = await run_load(ledger, options)
        assert tally.acked > 0
        clean = await check_run(http, ledger, tally)
        assert clean.ok, clean.problems
        lost = tally.sample[0].transfer_id
        with psycopg.connect(served.database_url, autocommit=True) as conn:
            # As a superuser, with triggers (guards and foreign keys) switched off.
            conn.execute("SET session_replication_role = replica")
            conn.execute("DELETE FROM transfers WHERE id = %s", (lost,))
            conn.execute(
                "UPDATE accounts SET posted_credits = posted_credits - 7, version = version + 1 "
                "WHERE id = %s",
                (ledger.account_ids[0],),
            )
        broken = await check_run(http, ledger, tally)
    assert not broken.ok
    assert not broken.conserved
    assert broken.balances_exact is False
    assert not broken.stored
    assert any(lost in line for line in broken.problems)


def _children(parent: int) -> list[int]:
    """uvicorn's worker processes: children of the serve process running the app."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _tcp_peers(pid: int) -> set[int]:
    """Remote ports of the established TCP connections process `pid` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                peers.add(int(fields[2].rpartition(":")[2], 16))
    return peers


async def test_serve_workers_runs_n_processes_that_all_serve(served: Served) -> None:
    """`--workers 2`: two worker processes, and each one answers requests. A worker opens its
    database pool only when it serves a request, so a database connection in each worker is
    the evidence that each one served."""
    pg_port = urlsplit(served.database_url).port or 5432
    assert len(served.workers) == SERVE_WORKERS
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection for every request
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=served.url, limits=fresh, headers=headers) as http:
        for _ in range(50):
            if all(pg_port in _tcp_peers(pid) for pid in served.workers):
                break
            requests = [http.get("/v1/accounts?limit=1") for _ in range(10)]
            responses = await asyncio.gather(*requests)
            assert all(r.status_code == 200 for r in responses)
    assert all(pg_port in _tcp_peers(pid) for pid in served.workers)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
