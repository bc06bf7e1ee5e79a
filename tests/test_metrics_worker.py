"""`ledger worker` with LEDGER_METRICS_PORT serves its own /metrics: the relay's counters are
scraped from the process that counts them."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from ledger.core.settings import Settings
from tests.helpers import funded_pair
from tests.processes import ledger_env

DEADLINE_SECONDS = 60.0  # a bound on waiting for a real process, never a timing assert


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(port: int) -> dict[str, float] | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    except OSError:
        return None
    finally:
        connection.close()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def _published_seen_by_worker(env: dict[str, str], port: int, events: int, log: Path) -> float:
    """Run `ledger worker` until its /metrics counts `events` published (bounded), then stop it."""
    with log.open("w") as stderr:
        worker = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        published = 0.0
        stop_at = time.monotonic() + DEADLINE_SECONDS
        while published < events and time.monotonic() < stop_at:
            if worker.poll() is not None:
                pytest.fail(f"ledger worker exited: {log.read_text()[-2000:]}")
            published = (_scrape(port) or {}).get("ledger_outbox_published_total", 0.0)
            time.sleep(0.1)
        return published
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


async def test_worker_serves_relay_counters_on_its_metrics_port(
    client: AsyncTestClient[Any],
    settings: Settings,
    sync_db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    await funded_pair(client, 500)
    [(events,)] = sync_db.execute("SELECT count(*) FROM outbox_events").fetchall()
    assert events > 0
    port = _free_port()
    env = ledger_env(
        settings.database_url or "", LEDGER_METRICS_PORT=str(port), LEDGER_LOG_LEVEL="info"
    )
    published = await asyncio.to_thread(
        _published_seen_by_worker, env, port, events, tmp_path / "worker.jsonl"
    )
    # Every event relayed (no Kafka here: positions for the HTTP feed), counted by the worker.
    assert published == events
    [(unpublished,)] = sync_db.execute(
        "SELECT count(*) FROM outbox_events e "
        "WHERE NOT EXISTS (SELECT 1 FROM outbox_feed f WHERE f.id = e.id)"
    ).fetchall()
    assert unpublished == 0
