"""Problem responses (RFC 9457): every error the API answers, rendered in one place."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from sqlalchemy.exc import DataError, DBAPIError

from ledger.core import limits
from ledger.core.db import is_unavailable, sqlstate
from ledger.core.errors import (
    PROBLEM_MEDIA_TYPE,
    LedgerError,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
)

T = TypeVar("T")
CHECK_VIOLATION = "23514"
log = structlog.get_logger("ledger.http")


HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    429: "too_many_requests",
    503: "service_unavailable",
}


def problem_response(
    body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[bytes]:
    return Response(
        content=msgspec.json.encode(body),
        status_code=int(body["status"]),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers or {},
    )


def handle_ledger_error(_: Request[Any, Any, Any], exc: LedgerError) -> Response[bytes]:
    headers = {}
    if exc.status == 503:
        headers["Retry-After"] = str(limits.RETRY_AFTER_SECONDS)
    return problem_response(exc.problem(), headers)


def handle_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if isinstance(exc, ValidationException) or status == 400:
        errors = []
        if isinstance(exc.extra, list):
            for item in exc.extra:
                if isinstance(item, dict):
                    errors.append(
                        {"field": str(item.get("key", "")), "message": str(item.get("message", ""))}
                    )
        return handle_ledger_error(_, ValidationFailed(str(exc.detail), errors=errors))
    if status == 413:
        return handle_ledger_error(
            _, PayloadTooLarge(f"the body is over {limits.REQUEST_BODY_BYTES_MAX} bytes")
        )
    code = HTTP_CODES.get(status, "http_error")
    return problem_response(
        {
            "type": f"https://ledger.dev/problems/{code.replace('_', '-')}",
            "title": str(exc.detail),
            "status": status,
            "detail": str(exc.detail),
            "code": code,
        },
        dict(exc.headers or {}),
    )


def _bad_host(request: Request[Any, Any, Any]) -> bool:
    """Whether the request's URL cannot be built. Litestar refuses a Host with characters no
    host has, but not a port out of range or not a number (`ledger:99999`): then every read of
    `request.url` raises ValueError, an idempotent POST's key scope among them. That is the
    client's Host, not our bug, and nothing ran past it."""
    try:
        _ = request.url
    except ValueError:
        return True
    return False


# Lock and statement timeouts, and serialization failures or deadlocks still failing after our
# retries: the database is too busy to finish in our bounds; nothing committed, so the client
# may retry.
BUSY_SQLSTATES = frozenset({"55P03", "57014", "40001", "40P01"})


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # The scope's path, not `request.url.path`: building the URL can raise (see _bad_host), and
    # this handler must answer whatever the request holds.
    path = str(request.scope.get("path", ""))
    if is_unavailable(exc):
        return handle_ledger_error(request, ServiceUnavailable())
    if sqlstate(exc) in BUSY_SQLSTATES:
        log.warning("http.database_busy", sqlstate=sqlstate(exc), path=path)
        return handle_ledger_error(
            request, ServiceUnavailable("the database did not answer within our time bounds")
        )
    if isinstance(exc, ValueError) and _bad_host(request):
        log.info("http.bad_host", path=path)
        return handle_ledger_error(
            request,
            ValidationFailed(
                "the Host header is not a valid host[:port]",
                errors=[{"field": "Host", "message": "invalid"}],
            ),
        )
    if isinstance(exc, DataError) or sqlstate(exc) == CHECK_VIOLATION:
        # A value the database cannot take (say a NUL character), or one a CHECK constraint
        # refuses, that no check of ours caught: the input's fault, never a 500, and the
        # transaction rolled back. Logged, since a check should have named the field.
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        log.warning("http.data_error", path=path, error=type(cause).__name__)
        return handle_ledger_error(
            request,
            ValidationFailed(
                "a value in the request cannot be stored",
                errors=[{"field": "", "message": "invalid value"}],
            ),
        )
    log.error("http.unhandled_error", exc_info=exc, path=path)
    return problem_response(
        {
            "type": "https://ledger.dev/problems/internal-error",
            "title": "Internal error",
            "status": 500,
            "detail": "the server failed; the request had no effect unless it committed",
            "code": "internal_error",
        }
    )
