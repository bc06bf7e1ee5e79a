"""A real `ledger serve --workers 2`: its stderr is JSON lines carrying the request's ids and the
caller's trace, /metrics adds up both worker processes, and no secret reaches its logs."""

from __future__ import annotations

import http.client
import json
import re
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import new_database
from tests.log_capture import TEST_SECRETS, find_secrets
from tests.processes import ledger_env, stop, wait_until_ready

ADMIN_SECRET = TEST_SECRETS[0]
WORKERS = 2


@dataclass
class Served:
    base_url: str
    stderr_path: Path

    def log_lines(self) -> list[dict[str, Any]]:
        """Every stderr line, parsed: each one must be a JSON object."""
        text = self.stderr_path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(
    pg_server: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    port = _free_port()
    command = [sys.executable, "-m", "ledger.cli", "serve", "--port", str(port)]
    env = ledger_env(
        new_database(pg_server),
        LEDGER_ADMIN_KEY=ADMIN_SECRET,
        LEDGER_LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    stderr_path = tmp_path_factory.mktemp("serve") / "stderr.jsonl"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [*command, "--workers", str(WORKERS)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, base_url, log=stderr_path)
        yield Served(base_url, stderr_path)
    finally:
        stop(process)


def _lines_for(served: Served, request_id: str) -> list[dict[str, Any]]:
    """The lines of one request; the access line is written just after the response is sent,
    so wait (bounded) for it to reach the file."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in served.log_lines() if line.get("request_id") == request_id]
        if any(line["event"] == "http.request" for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_stderr_lines_are_json_with_request_and_trace_ids(served: Served) -> None:
    trace_id, parent_span = secrets.token_hex(16), secrets.token_hex(8)
    request_id = f"serve-{uuid.uuid4().hex}"
    response = httpx.post(
        f"{served.base_url}/v1/accounts",
        json={"code": f"obs:{uuid.uuid4().hex[:8]}", "currency": "EUR", "normal_balance": "debit"},
        headers={
            "Authorization": f"Bearer {ADMIN_SECRET}",
            "traceparent": f"00-{trace_id}-{parent_span}-01",
            "X-Request-ID": request_id,
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == request_id

    lines = _lines_for(served, request_id)
    assert lines
    for line in lines:
        assert {"timestamp", "level", "event", "logger"} <= line.keys(), line
        assert line["trace_id"] == trace_id
        assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
    [access] = [line for line in lines if line["event"] == "http.request"]
    assert (access["method"], access["route"], access["status"]) == ("POST", "/v1/accounts", 201)
    # The process's own lines (uvicorn's included) are JSON too: log_lines() parsed them all.
    loggers = {line["logger"] for line in served.log_lines()}
    assert "uvicorn.error" in loggers


def test_unmatched_route_has_request_id_and_access_line(served: Served) -> None:
    response = httpx.get(f"{served.base_url}/nowhere/{uuid.uuid4()}")
    assert response.status_code == 404
    request_id = response.headers["x-request-id"]
    [access] = [line for line in _lines_for(served, request_id) if line["event"] == "http.request"]
    assert (access["route"], access["status"]) == ("unmatched", 404)


def _health_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "http_server_request_duration_seconds_count"
                and sample.labels.get("route") == "/health"
                and sample.labels.get("status") == "200"
            ):
                return sample.value
    return 0.0


def _get_on_new_connection(served: Served, path: str) -> tuple[int, str]:
    """One request on a connection of its own (cheap: no client pool, no TLS context)."""
    host, port = served.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_metrics_add_up_every_worker_process(served: Served) -> None:
    """Each request on a new connection, so the kernel spreads them over both workers; every
    scrape, whichever worker answers it, must count all of them."""
    before = _health_count(_get_on_new_connection(served, "/metrics")[1])
    requests = 30
    for _ in range(requests):
        assert _get_on_new_connection(served, "/health")[0] == 200
    scrapes = [_health_count(_get_on_new_connection(served, "/metrics")[1]) for _ in range(8)]
    assert scrapes == [before + requests] * len(scrapes)


def test_no_secret_in_the_server_logs(served: Served) -> None:
    for secret in (ADMIN_SECRET, "lk_wrong_secret_123"):
        response = httpx.get(
            f"{served.base_url}/v1/accounts", headers={"Authorization": f"Bearer {secret}"}
        )
        assert response.status_code == (200 if secret == ADMIN_SECRET else 401)
        _lines_for(served, response.headers["x-request-id"])
    text = served.stderr_path.read_text(encoding="utf-8")
    assert text.count('"event":"http.request"') >= 2
    forbidden = (*TEST_SECRETS, "lk_wrong_secret_123", "Bearer ")
    assert find_secrets(text.splitlines(), forbidden) == []
