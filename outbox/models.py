"""Outbox rows written in the business transaction, and the reference consumer's own tables."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSON
from sqlalchemy.orm import Mapped, mapped_column

from ledger.core.db import Base


class OutboxEvent(Base):
    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    type: Mapped[str] = mapped_column(sa.String(64))
    subject: Mapped[str]
    sequence: Mapped[int | None]
    # `json`, not `jsonb`: the exact text the writer encoded, which the relay and the feed send
    # unparsed (jsonb would reprint metadata numbers: `1e23` as `1e+23`).
    envelope: Mapped[dict[str, Any]] = mapped_column(JSON())
    traceparent: Mapped[str | None]
    created_at: Mapped[dt.datetime]
    # Set by the relay once the event is published (or fed, without Kafka): a gapless total
    # order that both Kafka and the HTTP feed follow.
    position: Mapped[int | None] = mapped_column(unique=True)
    published_at: Mapped[dt.datetime | None]

    __table_args__ = (
        sa.Index(
            "ix_outbox_events_unpublished",
            "id",
            postgresql_where=sa.text("position IS NULL"),
        ),
    )


class ConsumerInbox(Base):
    """Event ids a consumer group has applied: duplicates are dropped by this key."""

    __tablename__ = "consumer_inbox"

    group_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    processed_at: Mapped[dt.datetime]


class ConsumerBalance(Base):
    """The reference consumer's projection of account balances."""

    __tablename__ = "consumer_balances"

    group_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int]
    posted_debits: Mapped[int]
    posted_credits: Mapped[int]
    pending_debits: Mapped[int]
    pending_credits: Mapped[int]
    updated_at: Mapped[dt.datetime]


class ConsumerSequence(Base):
    """The last sequence a consumer group applied per subject: how the consumer kit proves it
    missed nothing (a jump is a gap), across restarts, in the consumer's own transaction."""

    __tablename__ = "consumer_sequences"

    group_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    subject: Mapped[str] = mapped_column(primary_key=True)
    sequence: Mapped[int]
    updated_at: Mapped[dt.datetime]
