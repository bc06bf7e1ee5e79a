"""Webhook endpoints: create (secret shown once), read, change, delete, rotate the secret; the
delivery log, replay and the retry of a failed delivery. Each change is audited, never with a
secret in it."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit.writer import AuditEntry, write_audit
from ledger.core import limits
from ledger.core.context import WriteContext
from ledger.core.errors import (
    WebhookDeliveryNotFailed,
    WebhookDeliveryNotFound,
    WebhookEndpointsLimit,
    WebhookNotFound,
)
from ledger.core.ids import new_id
from ledger.core.settings import Settings
from ledger.webhooks import deliveries as delivery_repo
from ledger.webhooks import repository as repo
from ledger.webhooks.rules import check_url, normal_event_types
from ledger.webhooks.schemas import WebhookCreate, WebhookPatch
from ledger.webhooks.secrets import SecretBox, make_secret, secret_box
from outbox import repository as feed
from outbox.service import read_feed

OBJECT_TYPE = "webhook"


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """What the process's settings say about endpoints, read once when the app starts."""

    allow_http: bool
    allow_private: bool
    box: SecretBox

    @classmethod
    def of(cls, settings: Settings) -> WebhookPolicy:
        return cls(
            settings.webhook_allow_http, settings.webhook_allow_private, secret_box(settings)
        )

    def url(self, url: str) -> str:
        return check_url(url, allow_http=self.allow_http, allow_private=self.allow_private)


async def _audit(
    session: AsyncSession, ctx: WriteContext, action: str, endpoint_id: uuid.UUID, data: Any
) -> None:
    entry = AuditEntry(
        action=action, object_type=OBJECT_TYPE, object_id=str(endpoint_id), data=data
    )
    await write_audit(session, [entry], ctx)


async def _new_secret(
    session: AsyncSession, policy: WebhookPolicy, endpoint_id: uuid.UUID, now: dt.datetime
) -> str:
    secret = make_secret()
    secret_id = new_id()
    stored = repo.StoredSecret(
        id=secret_id,
        endpoint_id=endpoint_id,
        sealed=policy.box.seal(secret, endpoint_id, secret_id),
        key_id=policy.box.key_id,
        created_at=now,
        expires_at=None,
    )
    await repo.insert_secret(session, stored)
    return secret


async def _found(session: AsyncSession, endpoint_id: uuid.UUID, *, lock: bool) -> repo.Endpoint:
    endpoint = await repo.get_endpoint(session, endpoint_id, for_update=lock)
    if endpoint is None:
        raise WebhookNotFound(f"webhook endpoint {endpoint_id} not found")
    return endpoint


async def create_endpoint(
    session: AsyncSession, request: WebhookCreate, *, policy: WebhookPolicy, ctx: WriteContext
) -> tuple[repo.Endpoint, str]:
    """A new endpoint and its secret. It starts at the feed's head: events fed before it was
    created are sent to it only by a replay."""
    url = policy.url(request.url)
    event_types = normal_event_types(request.event_types)
    await repo.lock_creations(session)
    if await repo.count_live(session, limits.WEBHOOK_ENDPOINTS_MAX) >= limits.WEBHOOK_ENDPOINTS_MAX:
        raise WebhookEndpointsLimit(
            f"at most {limits.WEBHOOK_ENDPOINTS_MAX} webhook endpoints; delete one first"
        )
    endpoint_id = new_id()
    await repo.insert_endpoint(
        session,
        {
            "id": endpoint_id,
            "url": url,
            "description": request.description,
            "event_types": event_types,
            "enabled": request.enabled,
            "cursor": await feed.last_feed_position(session),
            "created_at": ctx.now,
            "updated_at": ctx.now,
            "deleted_at": None,
        },
    )
    secret = await _new_secret(session, policy, endpoint_id, ctx.now)
    endpoint = await _found(session, endpoint_id, lock=False)
    request_data = {
        "url": url,
        "event_types": event_types,
        "description": request.description,
        "enabled": request.enabled,
    }
    await _audit(
        session,
        ctx,
        "webhook.create",
        endpoint_id,
        {"request": request_data, "result": endpoint.public()},
    )
    return endpoint, secret


async def list_endpoints(
    session: AsyncSession, *, after: uuid.UUID | None, limit: int
) -> list[repo.Endpoint]:
    return await repo.list_endpoints(session, after=after, limit=limit)


async def get_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> repo.Endpoint:
    return await _found(session, endpoint_id, lock=False)


async def update_endpoint(
    session: AsyncSession,
    endpoint_id: uuid.UUID,
    patch: WebhookPatch,
    *,
    policy: WebhookPolicy,
    ctx: WriteContext,
) -> repo.Endpoint:
    """Change what was sent. Enabling a disabled endpoint starts it at the feed's head again
    (what was fed while it was disabled goes to it only by a replay)."""
    before = await _found(session, endpoint_id, lock=True)
    values: dict[str, Any] = {}
    asked: dict[str, Any] = {}
    if patch.url is not msgspec.UNSET:
        values["url"] = asked["url"] = policy.url(patch.url)
    if patch.event_types is not msgspec.UNSET:
        values["event_types"] = asked["event_types"] = normal_event_types(patch.event_types)
    if patch.description is not msgspec.UNSET:
        values["description"] = asked["description"] = patch.description
    if patch.enabled is not msgspec.UNSET:
        values["enabled"] = asked["enabled"] = patch.enabled
        if patch.enabled and not before.enabled:
            values["cursor"] = await feed.last_feed_position(session)
    if not values:
        return before
    values["updated_at"] = ctx.now
    await repo.update_endpoint(session, endpoint_id, values)
    after = await _found(session, endpoint_id, lock=False)
    await _audit(
        session,
        ctx,
        "webhook.update",
        endpoint_id,
        {"request": asked, "before": before.public(), "result": after.public()},
    )
    return after


async def delete_endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, *, ctx: WriteContext
) -> repo.Endpoint:
    endpoint = await _found(session, endpoint_id, lock=True)
    await repo.update_endpoint(session, endpoint_id, {"deleted_at": ctx.now, "enabled": False})
    await _audit(session, ctx, "webhook.delete", endpoint_id, {"result": endpoint.public()})
    return endpoint


async def rotate_secret(
    session: AsyncSession, endpoint_id: uuid.UUID, *, policy: WebhookPolicy, ctx: WriteContext
) -> tuple[repo.Endpoint, str]:
    """A new current secret; the one it replaces keeps signing beside it for 24 h, and any
    older one stops now."""
    await _found(session, endpoint_id, lock=True)
    overlap = dt.timedelta(seconds=limits.WEBHOOK_SECRET_OVERLAP_SECONDS)
    await repo.expire_older_secrets(session, endpoint_id, ctx.now)
    await repo.expire_current_secrets(session, endpoint_id, ctx.now + overlap)
    secret = await _new_secret(session, policy, endpoint_id, ctx.now)
    await repo.update_endpoint(session, endpoint_id, {"updated_at": ctx.now})
    endpoint = await _found(session, endpoint_id, lock=False)
    old_until = (ctx.now + overlap).isoformat()
    await _audit(
        session,
        ctx,
        "webhook.secret_rotate",
        endpoint_id,
        {"result": endpoint.public(), "previous_secret_signs_until": old_until},
    )
    return endpoint, secret


async def list_deliveries(
    session: AsyncSession,
    endpoint_id: uuid.UUID,
    *,
    status: str | None,
    after: int | None,
    limit: int,
) -> list[delivery_repo.Delivery]:
    await _found(session, endpoint_id, lock=False)
    return await delivery_repo.list_page(
        session, endpoint_id, status=status, after=after, limit=limit
    )


async def replay(
    session: AsyncSession, endpoint_id: uuid.UUID, *, after: int, ctx: WriteContext
) -> int:
    """Send again every matching event after feed position `after`: the endpoint's cursor moves
    back there, and the worker takes those events again. A cursor whose next events were
    trimmed by retention is refused (410), as the feed refuses it."""
    await _found(session, endpoint_id, lock=True)
    await read_feed(session, after=after, limit=1)  # raises EventsExpired past retention
    await repo.rewind_cursor(session, endpoint_id, after, ctx.now)
    await _audit(session, ctx, "webhook.replay", endpoint_id, {"request": {"after": after}})
    return after


async def retry_delivery(
    session: AsyncSession, endpoint_id: uuid.UUID, event_id: uuid.UUID, *, ctx: WriteContext
) -> delivery_repo.Delivery:
    """A failed delivery pending again: attempted at once, then retried as a new one would be
    (72 h from now)."""
    await _found(session, endpoint_id, lock=False)
    delivery = await delivery_repo.by_event(session, endpoint_id, event_id, for_update=True)
    if delivery is None:
        raise WebhookDeliveryNotFound(f"no delivery of event {event_id} to this endpoint")
    if delivery.status != delivery_repo.FAILED:
        raise WebhookDeliveryNotFailed(f"the delivery of event {event_id} is {delivery.status}")
    deadline = ctx.now + dt.timedelta(seconds=limits.WEBHOOK_RETRY_WINDOW_SECONDS)
    await delivery_repo.reopen(
        session, endpoint_id, delivery.position, now=ctx.now, deadline=deadline
    )
    reopened = await delivery_repo.by_event(session, endpoint_id, event_id)
    if reopened is None:  # the row is locked by this transaction: it cannot have gone
        raise WebhookDeliveryNotFound(f"no delivery of event {event_id} to this endpoint")
    await _audit(
        session,
        ctx,
        "webhook.delivery_retry",
        endpoint_id,
        {"request": {"event_id": str(event_id)}, "result": reopened.public()},
    )
    return reopened


async def endpoints_with_health(
    session: AsyncSession, *, after: uuid.UUID | None, limit: int
) -> list[tuple[repo.Endpoint, delivery_repo.Health]]:
    """A page of endpoints, each with its delivery health (the console's list)."""
    endpoints = await repo.list_endpoints(session, after=after, limit=limit)
    return [
        (e, await delivery_repo.health(session, e.id, limits.WEBHOOK_PENDING_COUNT_MAX))
        for e in endpoints
    ]
