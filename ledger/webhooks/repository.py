"""All SQL of webhook endpoints and their secrets (deliveries: `deliveries.py`)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ledger.core.locks import SINGLETON_KEY, LockClass
from ledger.webhooks.models import WebhookEndpoint, WebhookSecret

Executor = AsyncConnection | AsyncSession

endpoints_t = cast(sa.Table, WebhookEndpoint.__table__)
secrets_t = cast(sa.Table, WebhookSecret.__table__)


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: uuid.UUID
    url: str
    description: str
    event_types: tuple[str, ...]
    enabled: bool
    cursor: int
    created_at: dt.datetime
    updated_at: dt.datetime
    secret_created_at: dt.datetime

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "description": self.description,
            "event_types": list(self.event_types),
            "enabled": self.enabled,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "secret_created_at": self.secret_created_at,
        }


@dataclass(frozen=True, slots=True)
class StoredSecret:
    id: uuid.UUID
    endpoint_id: uuid.UUID
    sealed: bytes
    key_id: str
    created_at: dt.datetime
    expires_at: dt.datetime | None


# The newest secret's time, beside each endpoint: one probe of the secrets' endpoint index.
_secret_created = (
    sa.select(sa.func.max(secrets_t.c.created_at))
    .where(secrets_t.c.endpoint_id == endpoints_t.c.id)
    .scalar_subquery()
    .label("secret_created_at")
)


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=row.id,
        url=row.url,
        description=row.description,
        event_types=tuple(row.event_types),
        enabled=row.enabled,
        cursor=int(row.cursor),
        created_at=row.created_at,
        updated_at=row.updated_at,
        secret_created_at=row.secret_created_at,
    )


def _live() -> sa.Select[Any]:
    return sa.select(endpoints_t, _secret_created).where(endpoints_t.c.deleted_at.is_(None))


async def lock_creations(db: Executor) -> None:
    """Creations wait for each other, so that two at once cannot both pass the bound."""
    await db.execute(
        sa.select(sa.func.pg_advisory_xact_lock(int(LockClass.WEBHOOK_ENDPOINTS), SINGLETON_KEY))
    )


async def count_live(db: Executor, cap: int) -> int:
    """Live endpoints, counted up to `cap` (the bound: never more rows than that are read)."""
    inner = (
        sa.select(endpoints_t.c.id).where(endpoints_t.c.deleted_at.is_(None)).limit(cap).subquery()
    )
    return int((await db.execute(sa.select(sa.func.count()).select_from(inner))).scalar_one())


async def insert_endpoint(db: Executor, values: dict[str, Any]) -> None:
    await db.execute(sa.insert(endpoints_t).values(**values))


async def insert_secret(db: Executor, secret: StoredSecret) -> None:
    await db.execute(
        sa.insert(secrets_t).values(
            id=secret.id,
            endpoint_id=secret.endpoint_id,
            sealed=secret.sealed,
            key_id=secret.key_id,
            created_at=secret.created_at,
            expires_at=secret.expires_at,
        )
    )


async def get_endpoint(
    db: Executor, endpoint_id: uuid.UUID, *, for_update: bool = False
) -> Endpoint | None:
    query = _live().where(endpoints_t.c.id == endpoint_id)
    if for_update:
        query = query.with_for_update(of=endpoints_t)
    row = (await db.execute(query)).first()
    return None if row is None else _endpoint(row)


async def list_endpoints(db: Executor, *, after: uuid.UUID | None, limit: int) -> list[Endpoint]:
    query = _live().order_by(endpoints_t.c.id).limit(limit)
    if after is not None:
        query = query.where(endpoints_t.c.id > after)
    return [_endpoint(r) for r in await db.execute(query)]


async def update_endpoint(db: Executor, endpoint_id: uuid.UUID, values: dict[str, Any]) -> None:
    await db.execute(sa.update(endpoints_t).where(endpoints_t.c.id == endpoint_id).values(**values))


async def rewind_cursor(db: Executor, endpoint_id: uuid.UUID, position: int, now: Any) -> None:
    """Move the endpoint's cursor back to `position` (never forward): the worker then takes
    every event after it again."""
    await db.execute(
        sa.update(endpoints_t)
        .where(endpoints_t.c.id == endpoint_id)
        .values(cursor=sa.func.least(endpoints_t.c.cursor, position), updated_at=now)
    )


async def expire_current_secrets(db: Executor, endpoint_id: uuid.UUID, at: dt.datetime) -> None:
    """The current secret keeps signing until `at`; any older one stops now at the latest (at
    most two secrets sign at once)."""
    await db.execute(
        sa.update(secrets_t)
        .where(secrets_t.c.endpoint_id == endpoint_id)
        .where(secrets_t.c.expires_at.is_(None))
        .values(expires_at=at)
    )


async def expire_older_secrets(db: Executor, endpoint_id: uuid.UUID, now: dt.datetime) -> None:
    """Secrets still in their overlap stop signing now (a second rotation within 24 h)."""
    await db.execute(
        sa.update(secrets_t)
        .where(secrets_t.c.endpoint_id == endpoint_id)
        .where(secrets_t.c.expires_at > now)
        .values(expires_at=now)
    )


async def valid_secrets(db: Executor, now: dt.datetime) -> list[StoredSecret]:
    """Every secret that still signs, of every live endpoint (at most two each)."""
    query = (
        sa.select(secrets_t)
        .join(endpoints_t, endpoints_t.c.id == secrets_t.c.endpoint_id)
        .where(endpoints_t.c.deleted_at.is_(None))
        .where(sa.or_(secrets_t.c.expires_at.is_(None), secrets_t.c.expires_at > now))
        .order_by(secrets_t.c.endpoint_id, secrets_t.c.created_at.desc())
    )
    return [
        StoredSecret(r.id, r.endpoint_id, r.sealed, r.key_id, r.created_at, r.expires_at)
        for r in await db.execute(query)
    ]


async def live_endpoints(db: Executor, limit: int) -> list[Endpoint]:
    """Every live endpoint (the worker's view; bounded by the endpoints' own bound)."""
    return [_endpoint(r) for r in await db.execute(_live().order_by(endpoints_t.c.id).limit(limit))]


async def deleted_endpoint_ids(db: Executor, limit: int) -> list[uuid.UUID]:
    query = sa.select(endpoints_t.c.id).where(endpoints_t.c.deleted_at.is_not(None)).limit(limit)
    return [r.id for r in await db.execute(query)]


async def delete_endpoint_row(db: Executor, endpoint_id: uuid.UUID) -> None:
    await db.execute(sa.delete(endpoints_t).where(endpoints_t.c.id == endpoint_id))
