"""Shared HTTP plumbing: services on app state, authentication guards, idempotent POSTs,
cursors and problem responses."""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import structlog
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy.exc import DataError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger import limits
from ledger.apikeys import service as keys
from ledger.context import Actor, WriteContext
from ledger.db import is_unavailable, run_in_transaction, sqlstate
from ledger.errors import (
    Forbidden,
    LedgerError,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)
from ledger.idempotency import StoredResponse, check_key, fingerprint, run_idempotent
from ledger.settings import Settings
from observability import metrics
from transfers.group_commit import GroupCommitter, IdempotencyClaim

T = TypeVar("T")
log = structlog.get_logger("ledger.http")

PROBLEM = "application/problem+json"

PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset({"admin", "operator", "reader", "auditor"}),
    "write": frozenset({"admin", "operator"}),
    "audit": frozenset({"admin", "auditor"}),
    "keys": frozenset({"admin"}),
}


@dataclass(slots=True)
class Services:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    group_committer: GroupCommitter | None = None
    key_cache: KeyCache = field(default_factory=lambda: KeyCache())

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        return await run_in_transaction(self.sessionmaker, work)


class KeyCache:
    """Authenticated keys by secret hash, for a short time: every request authenticates, and a
    database round trip per request for the same few keys was an eighth of the API's CPU.
    Unknown secrets are never cached. A revocation through this process empties the cache."""

    def __init__(
        self,
        ttl_seconds: float = limits.API_KEY_CACHE_TTL_SECONDS,
        entries_max: int = limits.API_KEY_CACHE_ENTRIES_MAX,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.entries_max = entries_max
        self.entries: dict[str, tuple[keys.KeyView, float]] = {}

    def get(self, secret_hash: str) -> keys.KeyView | None:
        found = self.entries.get(secret_hash)
        if found is None:
            return None
        key, expires = found
        if expires < time.monotonic():
            del self.entries[secret_hash]
            return None
        return key

    def put(self, secret_hash: str, key: keys.KeyView) -> None:
        if len(self.entries) >= self.entries_max:
            self.entries.clear()
        self.entries[secret_hash] = (key, time.monotonic() + self.ttl_seconds)

    def clear(self) -> None:
        self.entries.clear()


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    services: Services = connection.app.state.services
    return services


def requires(
    permission: str,
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]:
    allowed = PERMISSIONS[permission]

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        header = connection.headers.get("authorization", "")
        scheme, _sep, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("send Authorization: Bearer <API key secret>")
        services = services_of(connection)
        secret_hash = keys.hash_secret(secret.strip())
        key = services.key_cache.get(secret_hash)
        if key is None:

            async def lookup(session: AsyncSession) -> keys.KeyView | None:
                return await keys.authenticate(session, secret.strip())

            key = await services.run(lookup)
            if key is None:
                raise Unauthorized("unknown or revoked API key")
            services.key_cache.put(secret_hash, key)
        connection.state.actor = Actor(id=key.id, name=key.name, role=key.role)
        structlog.contextvars.bind_contextvars(actor_id=str(key.id))
        if key.role not in allowed:
            raise Forbidden(f"role {key.role} may not do this")

    return guard


def write_context(request: Request[Any, Any, Any]) -> WriteContext:
    bound = structlog.contextvars.get_contextvars()
    client = request.client.host if request.client else None
    return WriteContext(
        actor=request.state.actor,
        request_id=bound.get("request_id"),
        trace_id=bound.get("trace_id"),
        traceparent=bound.get("traceparent"),
        client_addr=client,
    )


def canonical(body: bytes) -> bytes:
    """The body as a canonical JSON text: the same request always fingerprints the same."""
    try:
        return msgspec.json.encode(msgspec.json.decode(body), order="sorted")
    except (msgspec.DecodeError, RecursionError):
        return body


def claim_of(request: Request[Any, Any, Any], body: bytes) -> IdempotencyClaim | None:
    """The request's Idempotency-Key, scoped to its principal, with the body's fingerprint."""
    key = request.headers.get("idempotency-key")
    actor: Actor = request.state.actor
    if key is None or actor.id is None:
        return None
    check_key(key)
    return IdempotencyClaim(
        principal_id=actor.id,
        key=key,
        fingerprint=fingerprint(request.method, request.url.path, canonical(body)),
    )


async def idempotent_post(
    request: Request[Any, Any, Any],
    effect: Callable[[AsyncSession, WriteContext], Awaitable[tuple[int, Any]]],
    *,
    redact: Callable[[Any], Any] | None = None,
) -> Response[bytes]:
    """Run one write in one transaction, honouring Idempotency-Key exactly as the contract says.

    `redact` gives the value to keep for replays when it must not hold everything sent now (an
    API key's secret is never stored in the clear, not even in the key row)."""
    services = services_of(request)
    claim = claim_of(request, await request.body())
    base_ctx = write_context(request)

    async def work(session: AsyncSession) -> StoredResponse:
        ctx = base_ctx.at_now()

        async def run_effect(s: AsyncSession) -> StoredResponse:
            status, value = await effect(s, ctx)
            kept = None if redact is None else msgspec.json.encode(redact(value))
            return StoredResponse(status, msgspec.json.encode(value), stored_body=kept)

        if claim is None:
            return await run_effect(session)
        return await run_idempotent(
            session,
            principal_id=claim.principal_id,
            key=claim.key,
            fingerprint_hex=claim.fingerprint,
            now=ctx.now,
            effect=run_effect,
        )

    stored = await services.run(work)
    headers = {}
    if stored.replayed:
        headers["Idempotent-Replayed"] = "true"
        metrics.IDEMPOTENT_REPLAYS.inc()
    return Response(
        content=stored.body,
        status_code=stored.status,
        media_type=stored.media_type,
        headers=headers,
    )


def json_response(
    value: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    return Response(
        content=msgspec.json.encode(value),
        status_code=status,
        media_type="application/json",
        headers=headers or {},
    )


# -- pagination ----------------------------------------------------------------------------------


def check_limit(limit: int) -> int:
    if not (1 <= limit <= limits.LIST_LIMIT_MAX):
        raise ValidationFailed(
            f"limit must be 1..{limits.LIST_LIMIT_MAX}",
            errors=[{"field": "limit", "message": "out of range"}],
        )
    return limit


def encode_cursor(kind: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise _bad_cursor() from exc
    prefix, _, value = text.partition(":")
    if prefix != kind or not value:
        raise _bad_cursor()
    return value


def decode_uuid_cursor(kind: str, cursor: str | None) -> uuid.UUID | None:
    value = decode_cursor(kind, cursor)
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise _bad_cursor() from exc


def decode_int_cursor(kind: str, cursor: str | None) -> int | None:
    value = decode_cursor(kind, cursor)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 19 or int(value) > limits.AMOUNT_MAX:
        raise _bad_cursor()
    return int(value)


def _bad_cursor() -> ValidationFailed:
    return ValidationFailed(
        "cursor is not valid", errors=[{"field": "cursor", "message": "invalid"}]
    )


def page(
    items: list[Any], limit: int, next_value: Callable[[Any], str], kind: str
) -> dict[str, Any]:
    cursor = encode_cursor(kind, next_value(items[-1])) if len(items) == limit and items else None
    return {"data": items, "next_cursor": cursor}


# -- problems ------------------------------------------------------------------------------------

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
        media_type=PROBLEM,
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


# Lock and statement timeouts, and serialization failures or deadlocks still failing after our
# retries: the database is too busy to finish in our bounds; nothing committed, so the client
# may retry.
BUSY_SQLSTATES = frozenset({"55P03", "57014", "40001", "40P01"})


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if is_unavailable(exc):
        return handle_ledger_error(request, ServiceUnavailable())
    if sqlstate(exc) in BUSY_SQLSTATES:
        log.warning("http.database_busy", sqlstate=sqlstate(exc), path=request.url.path)
        return handle_ledger_error(
            request, ServiceUnavailable("the database did not answer within our time bounds")
        )
    if isinstance(exc, DataError):
        # A value the database cannot take (say a NUL character) that no check caught: the
        # input's fault, never a 500. Logged, since a check should have named the field.
        log.warning("http.data_error", path=request.url.path, error=type(exc.orig).__name__)
        return handle_ledger_error(
            request,
            ValidationFailed(
                "a value in the request cannot be stored",
                errors=[{"field": "", "message": "invalid value"}],
            ),
        )
    log.error("http.unhandled_error", exc_info=exc, path=request.url.path)
    return problem_response(
        {
            "type": "https://ledger.dev/problems/internal-error",
            "title": "Internal error",
            "status": 500,
            "detail": "the server failed; the request had no effect unless it committed",
            "code": "internal_error",
        }
    )
