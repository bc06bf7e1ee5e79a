"""Log lines: JSON with the contract's fields, request and trace ids on every request line, one
access line per request (unmatched routes too), secrets masked, console on a terminal."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from litestar.testing import AsyncTestClient

from observability.logging import default_format, make_handler
from tests.log_capture import TEST_SECRETS, find_secrets, session_log

REQUIRED_FIELDS = ("timestamp", "level", "event", "logger")
DOTTED_EVENT = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
ADMIN_SECRET = TEST_SECRETS[0]

LogLines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Everything logged during the test, rendered as production renders it, parsed back. Every
    line must parse as JSON: a line that does not fails the test."""
    buffer = io.StringIO()
    handler = make_handler(buffer, "json")
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(logging.INFO)

    def parsed() -> list[dict[str, Any]]:
        return [json.loads(line) for line in buffer.getvalue().splitlines()]

    try:
        yield parsed
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


async def test_request_lines_are_json_with_ids_and_the_incoming_trace(
    client: AsyncTestClient[Any], log_lines: LogLines
) -> None:
    trace_id, parent_span_id, traceparent = new_traceparent()
    request_id = f"req-{uuid.uuid4().hex}"
    response = await client.post(
        "/v1/accounts",
        json={"code": f"log:{uuid.uuid4().hex[:8]}", "currency": "USD", "normal_balance": "credit"},
        headers={"traceparent": traceparent, "X-Request-ID": request_id},
    )
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == request_id

    lines = log_lines()
    mine = [line for line in lines if line.get("request_id") == request_id]
    assert mine, lines
    for line in mine:
        for field in REQUIRED_FIELDS:
            assert line.get(field), (field, line)
        assert dt.datetime.fromisoformat(line["timestamp"]).utcoffset() == dt.timedelta(0)
        assert line["trace_id"] == trace_id
        assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
        assert line["span_id"] != parent_span_id  # the server span's own id, a child of ours
        assert "traceparent" not in line
    access = [line for line in mine if line["event"] == "http.request"]
    assert len(access) == 1
    assert access[0]["method"] == "POST"
    assert access[0]["route"] == "/v1/accounts"
    assert access[0]["status"] == 201
    assert access[0]["level"] == "info"
    assert access[0]["logger"] == "ledger.http"
    assert isinstance(access[0]["duration_ms"], float | int) and access[0]["duration_ms"] >= 0
    ours = [line for line in lines if str(line["logger"]).startswith("ledger")]
    assert all(DOTTED_EVENT.match(line["event"]) for line in ours), ours


async def test_unmatched_route_still_gets_request_id_and_access_line(
    client: AsyncTestClient[Any], log_lines: LogLines
) -> None:
    response = await client.get(f"/v1/no-such-thing/{uuid.uuid4()}")
    assert response.status_code == 404
    request_id = response.headers["x-request-id"]
    uuid.UUID(request_id)  # generated: the client sent none
    access = [
        line
        for line in log_lines()
        if line["event"] == "http.request" and line.get("request_id") == request_id
    ]
    assert len(access) == 1, access
    assert access[0]["route"] == "unmatched"
    assert access[0]["status"] == 404
    assert re.fullmatch(r"[0-9a-f]{32}", access[0]["trace_id"])


async def test_unusable_request_id_is_replaced(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "has spaces" + "x" * 200})
    assert response.status_code == 200
    uuid.UUID(response.headers["x-request-id"])


async def test_library_loggers_render_through_the_same_pipeline(log_lines: LogLines) -> None:
    for name in ("uvicorn.error", "litestar", "aiokafka", "sqlalchemy.engine"):
        logging.getLogger(name).warning("library says %s", "hello")
    lines = {line["logger"]: line for line in log_lines()}
    for name in ("uvicorn.error", "litestar", "aiokafka", "sqlalchemy.engine"):
        assert lines[name]["event"] == "library says hello"
        assert lines[name]["level"] == "warning"
        assert lines[name]["timestamp"]


async def test_secrets_are_masked_wherever_they_appear(log_lines: LogLines) -> None:
    log = structlog.get_logger("ledger.test")
    log.warning(
        "auth.probe",
        authorization=f"Bearer {ADMIN_SECRET}",
        note=f"the key was {ADMIN_SECRET}",
        headers={"Authorization": "Bearer abc.def", "accept": "application/json"},
        raw_headers=[(b"authorization", b"Bearer xyz")],
        admin_key=ADMIN_SECRET,
    )
    try:
        raise ValueError(f"bad key {ADMIN_SECRET} in Bearer {ADMIN_SECRET}")
    except ValueError:
        log.exception("auth.failed")
    logging.getLogger("uvicorn.error").error("header was Authorization: Bearer %s", ADMIN_SECRET)
    lines = log_lines()
    text = json.dumps(lines)
    assert len(lines) == 3
    assert find_secrets(text.splitlines()) == []
    assert "abc.def" not in text and "xyz" not in text
    assert "[redacted]" in lines[0]["authorization"]
    assert lines[0]["headers"]["accept"] == "application/json"
    assert "ValueError" in lines[1]["exception"] and "[redacted]" in lines[1]["exception"]


def test_console_rendering_for_a_terminal() -> None:
    buffer = io.StringIO()
    logger = logging.getLogger("ledger.console_probe")
    handler = make_handler(buffer, "console")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("console.probe")
        try:
            raise RuntimeError(f"refused {ADMIN_SECRET}")
        except RuntimeError:
            logger.exception("console.failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = buffer.getvalue()
    assert "console.probe" in text and "warning" in text
    assert not text.lstrip().startswith("{")
    assert "RuntimeError: refused [redacted]" in text  # tracebacks are masked here too
    assert ADMIN_SECRET not in text

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert default_format(Terminal()) == "console"
    assert default_format(io.StringIO()) == "json"


async def test_the_session_capture_sees_request_lines(client: AsyncTestClient[Any]) -> None:
    """The secrets scan at the end of the session reads this capture: it must hold the lines of
    authenticated requests, or the scan would pass without looking."""
    capture = session_log()
    assert capture is not None
    request_id = f"capture-{uuid.uuid4().hex}"
    response = await client.get("/v1/accounts", headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    capture.flush()
    captured = capture.path.read_text(encoding="utf-8")
    assert request_id in captured


def test_find_secrets_reports_lines_without_repeating_the_secret() -> None:
    lines = ["clean", f'{{"note": "{ADMIN_SECRET}"}}', "Authorization: Bearer abc", "bearer"]
    hits = find_secrets(lines)
    assert hits == ["line 2: an API key secret", "line 3: Bearer credential"]
    assert ADMIN_SECRET not in " ".join(hits)
