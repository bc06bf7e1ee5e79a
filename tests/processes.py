"""Real `ledger` processes for the tests that need them: one environment, built in one place.

Every test that starts `ledger serve`, `ledger worker` or another `ledger` command builds its
environment with `ledger_env`, so a setting every process needs (a new mandatory variable) is
added here once, not in each module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers import inherited_env

LEDGER = str(Path(sys.executable).with_name("ledger"))
# Variables of ours, of the metrics' multiprocess mode and of tracing that a developer's shell
# may hold: a test process gets only what its test sets.
INHERITED_PREFIXES_DROPPED = ("LEDGER_", "PROMETHEUS_", "OTEL_")
START_DEADLINE_SECONDS = 90.0  # a cold start on a busy 2-core machine; never a timing assert
STOP_DEADLINE_SECONDS = 15.0


def ledger_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a `ledger` subprocess on `database_url`: JSON logs at warning, and
    `settings` (`LEDGER_ADMIN_KEY=...`, `LEDGER_KAFKA_BOOTSTRAP_SERVERS=...`) on top."""
    env = inherited_env(INHERITED_PREFIXES_DROPPED)  # keeps the session's audit signing key
    env.update(
        LEDGER_DATABASE_URL=database_url, LEDGER_LOG_FORMAT="json", LEDGER_LOG_LEVEL="warning"
    )
    env.update(settings)
    return env


def wait_until_ready(
    process: subprocess.Popen[bytes], url: str, what: str = "ledger serve", log: Path | None = None
) -> None:
    """Polls `GET /ready` until 200; fails with the process's exit (and its `log`, when given)
    if it stops first or is not ready in time."""
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = f": {log.read_text()}" if log is not None else ""
            raise AssertionError(f"{what} exited with {process.returncode} at start{said}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    said = f": {log.read_text()}" if log is not None else ""
    raise AssertionError(f"{what} was not ready within {START_DEADLINE_SECONDS} s{said}")


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM to the process group (a started session), SIGKILL if it lingers; its exit code."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_DEADLINE_SECONDS)
    return process.returncode
