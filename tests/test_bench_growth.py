"""`ledger bench --growth` at small sizes against a real `ledger serve` and `ledger worker`
(relaying to the real broker), on a database of its own: the smoke test of the growth bench.

It asserts what the run found, never how fast: every read answered 200 with the shape and the
count the database predicts, the ledger reached each size exactly and still verifies, and the
bytes it wrote were measured. The checks that make those assertions mean something are shown
to fail on a wrong answer.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from ledger.bench.growth import parse_sizes
from ledger.bench.growth.reads import expect_body, expect_page
from ledger.core.errors import ConfigurationError
from ledger.embedded import LOOPBACK, EmbeddedBroker, free_port
from tests.conftest import new_database
from tests.processes import LEDGER, ledger_env, stop, wait_until_ready

ADMIN_KEY = "lk_test_growth_admin_0123456789"
SIZES = (300, 1000)
ACCOUNTS = 40
GROWTH_TIMEOUT_SECONDS = 300  # a generous bound on a busy machine, not a timing assert
READS = {
    "account",
    "statement_first_page",
    "statement_from_mid_date",
    "balance_as_of_mid_date",
    "transfers_of_account",
    "metadata_filter_first_page",
    "metadata_filter_deep_page",
    "trial_balance",
    "category_balance",
    "audit_by_object",
    "audit_by_action",
    "feed_from_start",
    "feed_near_end",
    "inclusion_proof",
    "console_account_page",
}


@dataclass
class Service:
    url: str
    database_url: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def service(pg_server: str, template_db: str, broker: EmbeddedBroker) -> Iterator[Service]:
    database_url = new_database(pg_server)
    env = ledger_env(
        database_url,
        LEDGER_ADMIN_KEY=ADMIN_KEY,
        LEDGER_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
    )
    url = f"http://{LOOPBACK}:{free_port()}"
    port = url.rsplit(":", 1)[1]
    common: dict[str, Any] = {
        "env": env,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "start_new_session": True,
    }
    serve = subprocess.Popen([LEDGER, "serve", "--host", LOOPBACK, "--port", port], **common)
    worker = subprocess.Popen([LEDGER, "worker"], **common)
    try:
        wait_until_ready(serve, url)
        yield Service(url, database_url, env)
    finally:
        stop(worker)
        stop(serve)


def _growth(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEDGER, "bench", "--url", service.url, "--database-url", service.database_url, *args],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=GROWTH_TIMEOUT_SECONDS,
        check=False,
    )


def test_growth_bench_reaches_each_size_and_every_read_answers(service: Service) -> None:
    sizes = ",".join(str(size) for size in SIZES)
    done = _growth(
        service, "--growth", sizes, "--accounts", str(ACCOUNTS), "--repeat", "2",
        "--deep-page", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The table, then the whole report as the last line.
    assert done.stdout.startswith("ledger bench --growth: p50 / p99 ms per read"), done.stdout
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["problems"] == [], report["problems"]
    assert report["ok"] is True
    steps = report["steps"]
    assert [step["size"] for step in steps] == list(SIZES)
    assert [step["transfers"] for step in steps] == list(SIZES)  # reached exactly
    for step in steps:
        assert set(step["reads"]) == READS
        for name, read in step["reads"].items():
            assert read["status"] == 200, (step["size"], name, read)
            assert "problem" not in read, (step["size"], name, read)
            assert 0 < read["p50_ms"] <= read["p99_ms"]
            assert read["p50_ms"] == read["median_ms"] <= read["p90_ms"] <= read["p99_ms"]
        assert step["verify_exit"] == 0  # still conserved after the fill
        assert step["disk_bytes_per_transfer"] > 0
        assert step["wal_bytes_per_transfer"] > 0
        assert step["event_backlog"] == 0
        assert step["seal_backlog"] == 0
        assert step["checkpoint_lag_p99_ms"] is not None
        assert step["table_bytes_per_transfer"]["transfers"] > 0
    assert steps[1]["deep_page"] == 3  # about 480 matches: page 3 of 100 exists
    assert all(read["ratio"] == 1.0 for read in steps[0]["reads"].values())
    assert report["wal_bytes_per_transfer"] > 0
    assert report["disk_bytes_per_transfer"] > 0
    # Sizes count the transfers in the ledger: a database holding more than the first size
    # allows is refused before anything is written.
    again = _growth(service, "--growth", "100,200", "--accounts", "2")
    assert again.returncode == 2, again.stdout
    assert "fresh database" in again.stderr


def test_growth_sizes_must_grow() -> None:
    for sizes in ("1000,300", "0,10", "ten", "", "10,10"):
        with pytest.raises(ConfigurationError, match="--growth"):
            parse_sizes(sizes)
    assert parse_sizes("10_000,100000") == (10_000, 100_000)


def _response(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)


def test_read_checks_name_a_wrong_answer() -> None:
    page = expect_page(2, lambda item: item.get("channel") == "web")
    assert page(_response(200, {"data": [{"channel": "web"}] * 2})) is None
    assert "1 items" in (page(_response(200, {"data": [{"channel": "web"}]})) or "")
    assert "does not match" in (page(_response(200, {"data": [{"channel": "app"}] * 2})) or "")
    assert "500" in (page(_response(500, {"code": "x"})) or "")
    balanced = expect_body(lambda b: b["total_debit"] == b["total_credit"], "balanced")
    assert balanced(_response(200, {"total_debit": 1, "total_credit": 2})) is not None
