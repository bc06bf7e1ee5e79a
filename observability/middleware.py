"""The outermost HTTP layer: the server span, then the request context inside it.

`RequestTelemetryMiddleware` is Litestar's OpenTelemetry middleware with our request context
wrapped inside, so that every response, an unmatched route (404, 405) included, gets an
`X-Request-ID`, one `http.request` access line and one observation in the request-duration
histogram, all carrying the ids of the server span. A Litestar app middleware would not do: it
runs only for matched routes, after routing.

Labels and the span name use the route template (`/v1/accounts/{account_id:uuid}`), never the
raw path, so their number stays bounded."""

from __future__ import annotations

import re
import time
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.plugins.opentelemetry import OpenTelemetryConfig
from litestar.plugins.opentelemetry.middleware import OpenTelemetryInstrumentationMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from uuid_utils import compat

from observability import metrics
from observability.tracing import current_ids

log = structlog.get_logger("ledger.http")

REQUEST_ID_HEADER = "x-request-id"
# Matched in full (`fullmatch`): `$` would also match before a final newline, and `req-1\n`
# would be echoed in a response header and written into audit records.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNMATCHED_ROUTE = "unmatched"
# Probes and scrapes: no span, and their access lines at debug so they do not drown the rest.
UNTRACED_PATHS = ("/health", "/metrics")
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestTelemetryMiddleware(OpenTelemetryInstrumentationMiddleware):
    """Server span (OpenTelemetry, continuing an incoming `traceparent`) around the request
    context. Paths excluded from tracing still go through the request context."""

    def __init__(self, app: ASGIApp, config: OpenTelemetryConfig) -> None:
        super().__init__(app=request_context(app), config=config)


def telemetry_config() -> OpenTelemetryConfig:
    """The OpenTelemetry settings `create_app` passes as `middleware=[config.middleware]`."""
    return OpenTelemetryConfig(
        exclude=[f"^{re.escape(path)}$" for path in UNTRACED_PATHS],
        middleware_class=RequestTelemetryMiddleware,
        scope_span_details_extractor=_span_details,
        # One server span per request; per-message send/receive spans only add noise.
        exclude_spans=["receive", "send"],
    )


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    # The route is unknown until the router has run; request_context renames the span then.
    return _method_label(scope.get("method")), {}


def request_context(app: ASGIApp) -> ASGIApp:
    """X-Request-ID, ids bound for every log line, one access line and the duration histogram."""
    templates = RouteTemplates()

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        request_id = _request_id(scope)
        trace_id, span_id, traceparent = current_ids()
        structlog.contextvars.clear_contextvars()
        # ledger/http/ write_context reads these for the audit record and the outbox rows;
        # log lines take trace_id/span_id from the current span when written instead.
        structlog.contextvars.bind_contextvars(
            request_id=request_id, trace_id=trace_id, span_id=span_id, traceparent=traceparent
        )
        started = time.perf_counter()
        response: dict[str, int] = {"status": 500}

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != REQUEST_ID_HEADER.encode()
                ]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode("latin-1")))
                message["headers"] = headers
                # Routing is done and the server span is still open (it ends with the body).
                _name_server_span(scope, templates.of(scope))
            await send(message)

        try:
            await app(scope, receive, send_with_request_id)
        finally:
            _finish(scope, templates.of(scope), response["status"], started)
            structlog.contextvars.clear_contextvars()

    return middleware


class RouteTemplates:
    """Route templates with their parameter types (`/v1/transfers/{transfer_id:uuid}`).

    The router leaves `path_template` in the scope without the types; the app's routes map it
    back to the declared path once, on the first request (routes are fixed by then)."""

    def __init__(self) -> None:
        self._typed: dict[str, str] | None = None

    def of(self, scope: Scope) -> str:
        template = scope.get("path_template")
        if not template:
            return UNMATCHED_ROUTE
        if self._typed is None:
            routes: Any = getattr(scope.get("app"), "routes", None) or []
            self._typed = {route.path_format: route.path for route in routes}
        return self._typed.get(template, str(template))


def _name_server_span(scope: Scope, route: str) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"{_method_label(scope.get('method'))} {route}")
        span.set_attribute(HTTP_ROUTE, route)


def _finish(scope: Scope, route: str, status: int, started: float) -> None:
    elapsed_seconds = time.perf_counter() - started
    method = _method_label(scope.get("method"))
    metrics.HTTP_REQUEST_DURATION.labels(route=route, method=method, status=str(status)).observe(
        elapsed_seconds
    )
    fields = {
        "method": method,
        "route": route,
        "path": scope["path"],
        "status": status,
        "duration_ms": round(elapsed_seconds * 1000, 3),
    }
    if status >= 500:
        log.error("http.request", **fields)
    elif scope["path"] in UNTRACED_PATHS:
        log.debug("http.request", **fields)
    else:
        log.info("http.request", **fields)


def _request_id(scope: Scope) -> str:
    """The caller's X-Request-ID when it is a sane token, else a new UUIDv7."""
    for name, value in scope["headers"]:
        if name.lower() == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    # uuid_utils directly, as ledger.core.ids.new_id does: observability sits below ledger.
    return str(compat.uuid7())


def _method_label(method: Any) -> str:
    text = str(method or "").upper()
    return text if text in _KNOWN_METHODS else "OTHER"
