"""Per-request context: X-Request-ID, trace ids bound into every log line, one access line,
and the request-duration histogram (labelled by route template, never the raw path)."""

from __future__ import annotations

import re
import time
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ledger.ids import new_id
from observability import metrics
from observability.tracing import current_ids

log = structlog.get_logger("ledger.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_context_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        http_scope = scope
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else str(new_id())
        trace_id, span_id, traceparent = current_ids()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=request_id, trace_id=trace_id, span_id=span_id, traceparent=traceparent
        )
        started = time.perf_counter()
        status_holder: dict[str, int] = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                raw = list(message.get("headers", []))
                raw.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = raw
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            status = status_holder["status"]
            metrics.HTTP_REQUEST_DURATION.labels(
                route=route, method=http_scope["method"], status=str(status)
            ).observe(elapsed)
            log.info(
                "http.request",
                method=http_scope["method"],
                route=route,
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 3),
            )
            structlog.contextvars.clear_contextvars()

    return middleware


def _route_of(scope: Scope) -> str:
    handler: Any = scope.get("route_handler")
    if handler is not None:
        paths = getattr(handler, "paths", None)
        if paths:
            return str(sorted(paths)[0])
    return "unmatched"
