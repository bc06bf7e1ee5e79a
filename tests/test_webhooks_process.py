"""Webhook delivery in its own process, the child of a real `ledger worker`: the relay feeds
every event while every endpoint hangs, the child's metrics reach the worker's /metrics, a
child killed with SIGKILL is started again and delivery resumes, and a worker killed with
SIGKILL leaves no child behind."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import sys
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from ledger.cli.main import ensure_admin_key
from ledger.core.settings import Settings
from ledger.embedded import free_port
from tests.helpers import app_client, create_account
from tests.processes import ledger_env
from tests.webhook_helpers import create_endpoint, receiver_settings, unfed, wait_for
from tests.webhook_receiver import receiving

CHILD_ARGUMENT = b"webhook-delivery"


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid` and whose command delivers webhooks."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, parent = fields[0], int(fields[1])
        if parent == pid and state != "Z" and CHILD_ARGUMENT in command.split(b"\0"):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def delivered_on_metrics(port: int, endpoint_id: str) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    except OSError:
        return 0.0
    finally:
        connection.close()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ledger_webhook_deliveries_total"
        and sample.labels == {"endpoint": endpoint_id, "outcome": "delivered"}
    )


async def test_delivery_runs_in_a_child_the_worker_restarts_and_takes_down_with_it(
    db_url: str, sync_db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    settings: Settings = receiver_settings(db_url)
    await ensure_admin_key(settings)
    port = free_port()
    env = ledger_env(
        db_url,
        LEDGER_WEBHOOK_ALLOW_HTTP="true",
        LEDGER_WEBHOOK_ALLOW_PRIVATE="true",
        LEDGER_METRICS_PORT=str(port),
        LEDGER_LOG_LEVEL="info",
    )
    log = tmp_path / "worker.log"
    async with (
        receiving(lambda _r: "hang") as hanging,
        receiving(lambda _r: "hang") as also_hanging,
        app_client(settings) as client,
    ):
        for url in (hanging.url, also_hanging.url):
            await create_endpoint(client, url)
        with log.open("ab") as stderr:
            worker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ledger.cli",
                "worker",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            await wait_for(lambda: len(children(worker.pid)) == 1, "the delivery child", 90)
            (first,) = children(worker.pid)

            # Every endpoint hangs (each holds its requests open): the relay feeds every event.
            for _ in range(20):
                await create_account(client)
            await wait_for(lambda: hanging.open_requests > 0, "the first endpoint's requests")
            await wait_for(lambda: also_hanging.open_requests > 0, "the second's")
            await wait_for(lambda: unfed(sync_db) == 0, "the relay to feed every event")

            async with receiving() as healthy:
                endpoint = await create_endpoint(client, healthy.url)
                # The child's counters are served on the worker's /metrics.
                await create_account(client)
                await wait_for(lambda: len(healthy.requests) >= 1, "a first delivery")
                await wait_for(
                    lambda: delivered_on_metrics(port, endpoint["id"]) >= 1,
                    "the child's metrics on the worker's /metrics",
                )

                # The child killed: the worker starts another, which delivers what came since.
                os.kill(first, signal.SIGKILL)
                await wait_for(
                    lambda: [p for p in children(worker.pid) if p != first] != [],
                    "a new delivery child",
                    90,
                )
                (second,) = children(worker.pid)
                account = await create_account(client)
                await wait_for(
                    lambda: any(r.event["subject"] == account["id"] for r in healthy.requests),
                    "the new child's delivery",
                )
                assert worker.returncode is None  # the worker itself never stopped

                # The worker killed: its child stops too (its pipe from the worker closed).
                worker.send_signal(signal.SIGKILL)
                await worker.wait()
                await wait_for(lambda: not alive(second), "the orphaned child to stop")
        finally:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
                await asyncio.wait_for(worker.wait(), 60)
    logs = log.read_text()
    assert logs.count('"webhook.delivery_process_started"') == 2
    assert '"webhook.delivery_process_exited"' in logs
    assert '"webhook.delivery_parent_gone"' in logs
