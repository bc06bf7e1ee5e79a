"""Webhook endpoints, their signing secrets and their deliveries (migration 0020).

Delivery state is per endpoint, as Kafka keeps offsets per consumer group: an endpoint's
`cursor` is the feed position up to which every event has been taken for it (sent and recorded,
or recorded as pending), and each taken event that matched its types has one delivery row.
"""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from ledger.core.db import Base

DELIVERY_STATUSES = ("pending", "delivered", "failed")


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    url: Mapped[str]
    description: Mapped[str]
    event_types: Mapped[list[str]] = mapped_column(ARRAY(sa.Text))
    enabled: Mapped[bool]
    # The feed position every event up to which has been taken for this endpoint.
    cursor: Mapped[int]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    # Deleted endpoints disappear from the API at once; the worker removes their deliveries
    # in bounded batches, then the row (a request never deletes an unbounded number of rows).
    deleted_at: Mapped[dt.datetime | None]

    __table_args__ = (
        sa.Index("ix_webhook_endpoints_live", "id", postgresql_where=sa.text("deleted_at IS NULL")),
    )


class WebhookSecret(Base):
    """A signing secret, sealed (AES-256-GCM) under a key that never enters the database. The
    current secret has no `expires_at`; a rotated one signs beside the new one until then."""

    __tablename__ = "webhook_secrets"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    sealed: Mapped[bytes] = mapped_column(sa.LargeBinary)
    key_id: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None]


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID]
    event_type: Mapped[str]
    subject: Mapped[str]
    status: Mapped[str] = mapped_column(sa.String(9))
    attempts: Mapped[int] = mapped_column(sa.Integer)
    # Set only on the oldest pending delivery of a subject (the one that may be sent); those
    # behind it wait with NULL until it is delivered or failed.
    next_attempt_at: Mapped[dt.datetime | None]
    deadline_at: Mapped[dt.datetime]  # retried until then (72 h), then failed
    last_attempt_at: Mapped[dt.datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(sa.Integer)
    last_error: Mapped[str | None]
    # The envelope's stored text, kept while it may still be sent (pending, failed).
    envelope: Mapped[str | None]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]

    __table_args__ = (
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
        sa.Index("ix_webhook_deliveries_event", "endpoint_id", "event_id"),
        sa.Index("ix_webhook_deliveries_status", "endpoint_id", "status", "position"),
        sa.Index(
            "ix_webhook_deliveries_due",
            "endpoint_id",
            "next_attempt_at",
            postgresql_where=sa.text("status = 'pending' AND next_attempt_at IS NOT NULL"),
        ),
        sa.Index(
            "ix_webhook_deliveries_pending_subject",
            "endpoint_id",
            "subject",
            "position",
            postgresql_where=sa.text("status = 'pending'"),
        ),
        sa.Index(
            "ix_webhook_deliveries_done",
            "updated_at",
            postgresql_where=sa.text("status <> 'pending'"),
        ),
    )
