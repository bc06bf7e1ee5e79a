"""Outbox rows written in the business transaction, and the reference consumer's own tables."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSON
from sqlalchemy.orm import Mapped, mapped_column

from ledger.core.db import Base


class OutboxEvent(Base):
    """One event, written in the business transaction and never updated: its feed position is in
    the relay's batch row that published it (`OutboxBatch`, the `outbox_feed` view)."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID]
    type: Mapped[str] = mapped_column(sa.String(64))
    subject: Mapped[str]
    sequence: Mapped[int | None]
    # The envelope as the writer encoded it, which the relay and the feed send unparsed, in one
    # of two columns (exactly one is set). `envelope_packed`: that text packed
    # (ledger/core/packed.py), what the writer stores since migration 0026_outbox_packed, a
    # quarter of the bytes. `envelope`: the text itself, in rows written before it; `json`, not
    # `jsonb`, which would reprint metadata numbers (`1e23` as `1e+23`).
    # Its `traceparent` (the relay's record header) is read from it: no column repeats it
    # (migration 0025_wal_indexes).
    envelope: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    envelope_packed: Mapped[bytes | None] = mapped_column(sa.LargeBinary())
    created_at: Mapped[dt.datetime]
    # The writing transaction's id: how the relay finds the events that committed since its last
    # window (outbox/repository.py).
    xact_id: Mapped[int] = mapped_column(
        sa.BigInteger, server_default=sa.text("(pg_current_xact_id()::text)::bigint")
    )

    __table_args__ = (
        sa.Index("ix_outbox_events_xact_id", "xact_id"),
        sa.CheckConstraint("num_nonnulls(envelope, envelope_packed) = 1", name="one_envelope"),
    )


class OutboxBatch(Base):
    """What one relay step published: `event_ids` got the feed positions `first_position`,
    `first_position + 1`, ... in that order. `window_low`/`window_high` (pg_snapshot text) and
    `window_after_id` are the relay's place: the events that committed after the first snapshot
    and by the second, in id order after that id (outbox/repository.py)."""

    __tablename__ = "outbox_batches"

    first_position: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    event_ids: Mapped[list[int]] = mapped_column(ARRAY(sa.BigInteger))
    published_at: Mapped[dt.datetime]
    window_low: Mapped[str]
    window_high: Mapped[str]
    window_after_id: Mapped[int] = mapped_column(sa.BigInteger)

    __table_args__ = (
        sa.CheckConstraint("first_position > 0 AND cardinality(event_ids) > 0", name="not_empty"),
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
