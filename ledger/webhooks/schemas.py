"""Webhook request and response bodies (msgspec). A secret appears only in `WebhookCreated`,
the answer of a creation or a rotation."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

from ledger.core import limits
from ledger.core.schemas import Strict
from ledger.http.pagination import SEQUENCE_CURSOR_PATTERN

UNSET: msgspec.UnsetType = msgspec.UNSET

# `(?!\n)` before `$`: Python's `$` also matches before a final newline (ledger/core/schemas.py).
# A URL: http(s), printable ASCII, no spaces; the service checks the rest (webhooks/rules.py).
URL_PATTERN = r"^https?://[!-~]+(?!\n)$"
# An event type (`ledger.transfer.posted`) or a prefix of one ending in `*` (`ledger.transfer.*`,
# `*` for every type).
EVENT_TYPE_PATTERN = r"^[a-z0-9_.]*\*?(?!\n)$"
DESCRIPTION_PATTERN = r"^[^\x00-\x1f\x7f]*(?!\n)$"

Url = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=limits.WEBHOOK_URL_LENGTH_MAX,
        pattern=URL_PATTERN,
        description="where events are POSTed: `https://...` (no credentials in it)",
    ),
]
EventType = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=limits.WEBHOOK_EVENT_TYPE_LENGTH_MAX, pattern=EVENT_TYPE_PATTERN
    ),
]
EventTypes = Annotated[
    list[EventType],
    msgspec.Meta(
        min_length=1,
        max_length=limits.WEBHOOK_EVENT_TYPES_MAX,
        description='event types, or prefixes ending in `*`; `["*"]`: every event',
    ),
]
Description = Annotated[
    str, msgspec.Meta(max_length=limits.WEBHOOK_DESCRIPTION_LENGTH_MAX, pattern=DESCRIPTION_PATTERN)
]
FeedCursor = Annotated[
    str,
    msgspec.Meta(
        pattern=SEQUENCE_CURSOR_PATTERN,
        description="a cursor of `GET /v1/events` (`resume_cursor`, `next_cursor`)",
    ),
]
DeliveryStatus = Literal["pending", "delivered", "failed"]


class WebhookCreate(Strict):
    url: Url
    event_types: EventTypes = msgspec.field(default_factory=lambda: ["*"])
    description: Description = ""
    enabled: bool = True


class WebhookPatch(Strict):
    url: Url | msgspec.UnsetType = UNSET
    event_types: EventTypes | msgspec.UnsetType = UNSET
    description: Description | msgspec.UnsetType = UNSET
    enabled: bool | msgspec.UnsetType = UNSET


class WebhookReplay(Strict):
    after: FeedCursor | None = None  # null or absent: from the oldest event the feed keeps


class WebhookOut(msgspec.Struct):
    id: uuid.UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    # When its current secret was made (creation or the last rotation); never the secret.
    secret_created_at: dt.datetime


class WebhookCreated(WebhookOut):
    """An endpoint with its new secret, shown once: a replay of the same request (same
    Idempotency-Key) answers `secret: null`, since the secret is kept nowhere in the clear."""

    secret: str | None


class WebhookPage(msgspec.Struct):
    data: list[WebhookOut]
    next_cursor: str | None


class DeliveryOut(msgspec.Struct):
    event_id: uuid.UUID
    event_type: str
    subject: str
    position: int
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime


class DeliveryPage(msgspec.Struct):
    data: list[DeliveryOut]
    next_cursor: str | None


class ReplayAccepted(msgspec.Struct):
    webhook_id: uuid.UUID
    after: str  # the feed cursor every matching event after which is sent again


class WebhookEmptyBody(Strict):
    """A rotation or a retry takes no fields: an empty object or no body at all."""
