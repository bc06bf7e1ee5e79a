"""Webhook endpoints over HTTP (admin only). A secret is in the answer of a creation or a
rotation, and nowhere else."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, get_args

from litestar import Controller, Request, Response
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.context import WriteContext
from ledger.core.errors import (
    EventsExpired,
    WebhookDeliveryNotFailed,
    WebhookDeliveryNotFound,
    WebhookEndpointsLimit,
    WebhookNotFound,
    WebhookUrlRefused,
)
from ledger.http import params
from ledger.http.auth import requires, write_context
from ledger.http.bodies import delete, get, patch, post, typed
from ledger.http.idempotent import idempotent_post
from ledger.http.pagination import (
    Limit,
    SequenceCursor,
    UuidCursor,
    decode_int_cursor,
    decode_uuid_cursor,
    page,
)
from ledger.http.responses import json_response
from ledger.http.state import services_of
from ledger.webhooks import service
from ledger.webhooks.schemas import (
    DeliveryOut,
    DeliveryPage,
    DeliveryStatus,
    ReplayAccepted,
    WebhookCreate,
    WebhookCreated,
    WebhookEmptyBody,
    WebhookOut,
    WebhookPage,
    WebhookPatch,
    WebhookReplay,
)
from ledger.webhooks.service import WebhookPolicy

POLICY_KEY = "webhooks"  # the WebhookPolicy in Services.extensions, put there by the app
BY_ID = {"webhook_id": "$response.body#/id"}
FEED_CURSOR_KIND = "event"  # the feed's own cursors (ledger/api/events.py)
STATUSES = get_args(DeliveryStatus)
StatusFilter = Annotated[str | None, Parameter(schema_extra={"enum": list(STATUSES)})]


def _policy(request: Request[Any, Any, Any]) -> WebhookPolicy:
    policy: WebhookPolicy = services_of(request).extensions[POLICY_KEY]
    return policy


def without_secret(created: dict[str, Any]) -> dict[str, Any]:
    """A replayed creation or rotation answers `secret: null`: the secret is shown once."""
    return {**created, "secret": None}


class WebhookController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]
    guards = [requires("webhooks")]

    @post(
        "/",
        operation_id="createWebhook",
        status_code=201,
        problems=(WebhookUrlRefused, WebhookEndpointsLimit),
        links={"getWebhook": BY_ID, "listWebhookDeliveries": BY_ID},
        example={
            "url": "https://partner.example/ledger-events",
            "event_types": ["ledger.transfer.*"],
            "description": "partner payouts",
        },
    )
    async def create(
        self, request: Request[Any, Any, Any], data: WebhookCreate
    ) -> Response[WebhookCreated]:
        """Create an endpoint; its `secret` (`whsec_...`) is in this answer only. It receives
        the events fed after this moment (older ones by a replay)."""
        policy = _policy(request)

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            endpoint, secret = await service.create_endpoint(session, data, policy=policy, ctx=ctx)
            return 201, {**endpoint.public(), "secret": secret}

        created = await idempotent_post(request, effect, redact=without_secret)
        return typed(created, WebhookCreated)

    @get("/", operation_id="listWebhooks")
    async def list_(
        self, request: Request[Any, Any, Any], cursor: UuidCursor = None, limit: Limit = 100
    ) -> Response[WebhookPage]:
        params.list_limit(limit)
        after = decode_uuid_cursor("webhook", cursor)

        async def work(session: AsyncSession) -> list[dict[str, Any]]:
            found = await service.list_endpoints(session, after=after, limit=limit)
            return [e.public() for e in found]

        items = await services_of(request).run(work)
        return typed(
            json_response(page(items, limit, lambda e: str(e["id"]), "webhook")), WebhookPage
        )

    @get("/{webhook_id:uuid}", operation_id="getWebhook", problems=(WebhookNotFound,))
    async def get_one(
        self, request: Request[Any, Any, Any], webhook_id: uuid.UUID
    ) -> Response[WebhookOut]:
        async def work(session: AsyncSession) -> dict[str, Any]:
            return (await service.get_endpoint(session, webhook_id)).public()

        return typed(json_response(await services_of(request).run(work)), WebhookOut)

    @patch(
        "/{webhook_id:uuid}",
        operation_id="patchWebhook",
        problems=(WebhookNotFound, WebhookUrlRefused),
    )
    async def patch_one(
        self, request: Request[Any, Any, Any], webhook_id: uuid.UUID, data: WebhookPatch
    ) -> Response[WebhookOut]:
        """Change the URL, the event types, the description or `enabled`. Enabling a disabled
        endpoint starts it at the feed's head."""
        policy = _policy(request)
        ctx = write_context(request)

        async def work(session: AsyncSession) -> dict[str, Any]:
            endpoint = await service.update_endpoint(
                session, webhook_id, data, policy=policy, ctx=ctx.at_now()
            )
            return endpoint.public()

        return typed(json_response(await services_of(request).run(work)), WebhookOut)

    @delete(
        "/{webhook_id:uuid}",
        operation_id="deleteWebhook",
        status_code=200,
        problems=(WebhookNotFound,),
    )
    async def delete_one(
        self, request: Request[Any, Any, Any], webhook_id: uuid.UUID
    ) -> Response[WebhookOut]:
        """Delete the endpoint: nothing more is sent to it; the endpoint as it was is answered."""
        ctx = write_context(request)

        async def work(session: AsyncSession) -> dict[str, Any]:
            return (await service.delete_endpoint(session, webhook_id, ctx=ctx.at_now())).public()

        return typed(json_response(await services_of(request).run(work)), WebhookOut)

    @post(
        "/{webhook_id:uuid}/secret/rotate",
        operation_id="rotateWebhookSecret",
        status_code=200,
        problems=(WebhookNotFound,),
    )
    async def rotate(
        self,
        request: Request[Any, Any, Any],
        webhook_id: uuid.UUID,
        data: WebhookEmptyBody | None = None,
    ) -> Response[WebhookCreated]:
        """A new secret, in this answer only; the one it replaces keeps signing beside it for
        24 h (each request then carries both signatures)."""
        policy = _policy(request)

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            endpoint, secret = await service.rotate_secret(
                session, webhook_id, policy=policy, ctx=ctx
            )
            return 200, {**endpoint.public(), "secret": secret}

        rotated = await idempotent_post(request, effect, redact=without_secret)
        return typed(rotated, WebhookCreated)

    @get(
        "/{webhook_id:uuid}/deliveries",
        operation_id="listWebhookDeliveries",
        problems=(WebhookNotFound,),
    )
    async def deliveries(
        self,
        request: Request[Any, Any, Any],
        webhook_id: uuid.UUID,
        status: StatusFilter = None,
        cursor: SequenceCursor = None,
        limit: Limit = 100,
    ) -> Response[DeliveryPage]:
        """The delivery log, in feed order: each event's attempts, its last status code or
        error, its next attempt."""
        params.list_limit(limit)
        params.check_filters({"status": status}, {"status": STATUSES})
        after = decode_int_cursor("webhook_delivery", cursor)

        async def work(session: AsyncSession) -> list[dict[str, Any]]:
            found = await service.list_deliveries(
                session, webhook_id, status=status, after=after, limit=limit
            )
            return [d.public() for d in found]

        items = await services_of(request).run(work)
        body = page(items, limit, lambda d: str(d["position"]), "webhook_delivery")
        return typed(json_response(body), DeliveryPage)

    @post(
        "/{webhook_id:uuid}/replay",
        operation_id="replayWebhook",
        status_code=202,
        problems=(WebhookNotFound, EventsExpired),
    )
    async def replay(
        self,
        request: Request[Any, Any, Any],
        webhook_id: uuid.UUID,
        data: WebhookReplay | None = None,
    ) -> Response[ReplayAccepted]:
        """Send again every matching event after a feed cursor (`after`, from `GET /v1/events`;
        null or absent: from the oldest event the feed keeps). The worker does it in order."""
        given = None if data is None else data.after
        position = decode_int_cursor(FEED_CURSOR_KIND, given) or 0

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            await service.replay(session, webhook_id, after=position, ctx=ctx)
            return 202, {"webhook_id": webhook_id, "after": str(position)}

        return typed(await idempotent_post(request, effect), ReplayAccepted)

    @post(
        "/{webhook_id:uuid}/deliveries/{event_id:uuid}/retry",
        operation_id="retryWebhookDelivery",
        status_code=200,
        problems=(WebhookNotFound, WebhookDeliveryNotFound, WebhookDeliveryNotFailed),
    )
    async def retry(
        self,
        request: Request[Any, Any, Any],
        webhook_id: uuid.UUID,
        event_id: uuid.UUID,
        data: WebhookEmptyBody | None = None,
    ) -> Response[DeliveryOut]:
        """Send one failed event again (at once, then with the usual backoff for 72 h)."""

        async def effect(session: AsyncSession, ctx: WriteContext) -> tuple[int, Any]:
            delivery = await service.retry_delivery(session, webhook_id, event_id, ctx=ctx)
            return 200, delivery.public()

        return typed(await idempotent_post(request, effect), DeliveryOut)
