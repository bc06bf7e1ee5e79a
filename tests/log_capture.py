"""Session-wide log capture and the secrets scan (a pytest plugin, listed in conftest.py).

Every line the test process logs, through structlog or any stdlib logger, is also written, rendered
exactly as in production, to one file for the whole session. When the session finishes, that file
is searched for the API key secrets the tests used and for `Bearer ` credentials; a hit fails the
session (exit status 1) and names the lines, however the tests themselves fared. Subprocess
tests scan their own captured stderr with `find_secrets`."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import pytest

from observability.logging import configure_logging, make_handler

# Every secret the suite uses on purpose; add yours here when a test makes a fixed one.
TEST_SECRETS = ("lk_test_admin_secret_0123456789",)
# `whsec_`: a webhook signing secret (docs/webhooks.md) is never logged, whichever it is.
FORBIDDEN_TEXT = (*TEST_SECRETS, "Bearer ", "whsec_")
# The suite logs at info (conftest): the scan must see the request lines, not only warnings.
SESSION_LOG_LEVEL = logging.INFO


class SessionLog:
    """The file every log line of this test session also goes to."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="ledger-test-log-", suffix=".jsonl")
        os.close(fd)
        self.path = Path(name)
        self._stream: IO[str] = self.path.open("a", encoding="utf-8")
        self.handler = make_handler(self._stream, "json")

    def flush(self) -> None:
        self.handler.flush()

    def close(self) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
        self._stream.close()


_session_log: SessionLog | None = None


def session_log() -> SessionLog | None:
    """The capture of this session (None when the plugin is not active), for tests that check
    the capture itself sees their lines."""
    return _session_log


def find_secrets(lines: Iterable[str], forbidden: Iterable[str] = FORBIDDEN_TEXT) -> list[str]:
    """`line N: <what>` for every line that contains one of the forbidden texts (the secret
    itself is never repeated in the report)."""
    needles = tuple(forbidden)
    hits = []
    for number, line in enumerate(lines, start=1):
        for needle in needles:
            if needle in line:
                what = "Bearer credential" if needle.startswith("Bearer") else "an API key secret"
                hits.append(f"line {number}: {what}")
    return hits


def pytest_configure(config: pytest.Config) -> None:
    global _session_log
    if _session_log is not None:
        return
    # structlog must render through the stdlib handlers before any test logs, or lines logged
    # before the first database fixture configures logging would bypass the capture.
    configure_logging(logging.getLevelName(SESSION_LOG_LEVEL).lower(), "json")
    _session_log = SessionLog()
    logging.getLogger().addHandler(_session_log.handler)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _session_log
    if _session_log is None:
        return
    capture, _session_log = _session_log, None
    capture.close()
    try:
        with capture.path.open(encoding="utf-8", errors="replace") as lines:
            hits = find_secrets(lines)
    finally:
        capture.path.unlink(missing_ok=True)
    if hits:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "secrets found in the logs of this test run:\n  " + "\n  ".join(hits[:20])
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(message, red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
