"""Unauthenticated endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from litestar import MediaType, Request, Response
from litestar.openapi import ResponseSpec
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.api.schemas import HealthOut, ReadyOut
from ledger.core import migrate
from ledger.core.errors import LedgerError
from ledger.http.bodies import get, typed
from ledger.http.responses import json_response
from ledger.http.state import services_of
from observability import metrics
from outbox import repository as outbox_repo


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


async def _readiness(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    head = migrate.head_revision()

    async def current(session: AsyncSession) -> str | None:
        row = (await session.execute(sa.text("SELECT version_num FROM alembic_version"))).first()
        return None if row is None else str(row[0])

    try:
        revision = await services.run(current)
    except LedgerError:
        return json_response({"status": "unavailable", "database": "unreachable"}, 503)
    except Exception:  # an unmigrated database has no alembic_version table
        return json_response({"status": "unavailable", "database": "not migrated"}, 503)
    if revision != head:
        return json_response(
            {"status": "unavailable", "migration": revision, "expected": head}, 503
        )
    return json_response({"status": "ready", "migration": revision})


# Documented as text; the response names the exact Prometheus content type (and version).
@get("/metrics", operation_id="metrics", tags=["system"], media_type=MediaType.TEXT)
async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[str]:
    services = services_of(request)

    try:
        status = await services.run(outbox_repo.status)
        metrics.OUTBOX_BACKLOG.set(status.backlog)
        metrics.OUTBOX_OLDEST_UNPUBLISHED_AGE.set(status.oldest_age_seconds)
    except Exception:  # metrics must answer even while the database is away
        metrics.OUTBOX_BACKLOG.set(float("nan"))
        metrics.OUTBOX_OLDEST_UNPUBLISHED_AGE.set(float("nan"))
    body, content_type = metrics.exposition()  # all workers' values under serve --workers N
    return typed(Response(content=body, media_type=content_type), str)
