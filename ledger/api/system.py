"""Unauthenticated endpoints: liveness, readiness, Prometheus metrics.

Anyone can call these, as often as they like: what they read from the database is shared by the
calls that arrive together and bounded in cost (ledger/core/shared_read.py, outbox_repo.status)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import structlog
from litestar import MediaType, Request, Response
from litestar.openapi import ResponseSpec
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.api.schemas import HealthOut, ReadyOut
from ledger.core import limits, migrate
from ledger.core.errors import LedgerError
from ledger.core.shared_read import SharedRead
from ledger.http.bodies import get, typed
from ledger.http.responses import json_response
from ledger.http.state import Services, services_of
from observability import metrics
from outbox import repository as outbox_repo
from outbox.repository import OutboxStatus

log = structlog.get_logger("ledger.api.system")


@get("/health", operation_id="health", include_in_schema=True, tags=["system"])
async def health() -> Response[HealthOut]:
    return typed(json_response({"status": "ok"}), HealthOut)


@get(
    "/ready",
    operation_id="ready",
    tags=["system"],
    responses={503: ResponseSpec(ReadyOut, description="Not ready: the reason is named")},
)
async def ready(request: Request[Any, Any, Any]) -> Response[ReadyOut]:
    return typed(await _readiness(request), ReadyOut)


READINESS_KEY = "ledger.api.readiness"
OUTBOX_STATUS_KEY = "ledger.api.outbox_status"


def _shared(services: Services, key: str, interval_seconds: float) -> SharedRead[Any]:
    """This app's shared read under `key` (one per process: the app lives as long as it)."""
    shared = services.extensions.get(key)
    if not isinstance(shared, SharedRead):
        shared = services.extensions[key] = SharedRead[Any](interval_seconds)
    return shared


async def _readiness(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Probes come unauthenticated: those arriving together share one query (SharedRead)."""
    services = services_of(request)
    head = migrate.head_revision()

    async def current(session: AsyncSession) -> str | None:
        row = (await session.execute(sa.text("SELECT version_num FROM alembic_version"))).first()
        return None if row is None else str(row[0])

    shared = _shared(services, READINESS_KEY, limits.READY_CHECK_INTERVAL_SECONDS)
    try:
        revision = await shared.get(lambda: services.run(current))
    except LedgerError:
        return json_response({"status": "unavailable", "database": "unreachable"}, 503)
    except Exception:  # an unmigrated database has no alembic_version table
        return json_response({"status": "unavailable", "database": "not migrated"}, 503)
    if revision != head:
        return json_response(
            {"status": "unavailable", "migration": revision, "expected": head}, 503
        )
    return json_response({"status": "ready", "migration": revision})


async def _outbox_status(services: Services) -> OutboxStatus | None:
    """The outbox status, bounded (outbox_repo.status), or None when it cannot be read now."""

    async def read(session: AsyncSession) -> OutboxStatus:
        return await outbox_repo.status(
            session,
            backlog_count_max=limits.OUTBOX_BACKLOG_COUNT_MAX,
            timeout_ms=limits.OUTBOX_STATUS_TIMEOUT_MS,
        )

    try:
        return await services.run(read)
    except Exception as exc:  # metrics must answer even while the database is away
        log.warning("metrics.outbox_status_failed", error=type(exc).__name__)
        return None


# Documented as text; the response names the exact Prometheus content type (and version).
@get("/metrics", operation_id="metrics", tags=["system"], media_type=MediaType.TEXT)
async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[str]:
    services = services_of(request)
    shared = _shared(services, OUTBOX_STATUS_KEY, limits.OUTBOX_STATUS_INTERVAL_SECONDS)
    status = await shared.get(lambda: _outbox_status(services))
    if status is None:
        metrics.OUTBOX_BACKLOG.set(float("nan"))
        metrics.OUTBOX_OLDEST_UNPUBLISHED_AGE.set(float("nan"))
    else:
        metrics.OUTBOX_BACKLOG.set(status.backlog)
        metrics.OUTBOX_OLDEST_UNPUBLISHED_AGE.set(status.oldest_age_seconds)
    body, content_type = metrics.exposition()  # all workers' values under serve --workers N
    return typed(Response(content=body, media_type=content_type), str)
