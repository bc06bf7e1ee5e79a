"""The money-movement tables (migration 0012): exchanges, the period lock, balance monitors.

Owned by the posting engine like the ledger's other tables: it writes exchanges and monitor
trigger counts in the posting transaction, and reads the period lock after its locks."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ledger.core.db import Base

MONITOR_FIELDS = ("posted", "available")
MONITOR_OPERATORS = ("lt", "lte", "gt", "gte")


class Exchange(Base):
    """A cross-currency exchange: its two legs, posted in one transaction. Insert-only; both
    legs are foreign keys, so the row cannot exist without both transfers."""

    __tablename__ = "exchanges"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    debit_transfer_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("transfers.id"), unique=True)
    credit_transfer_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("transfers.id"), unique=True
    )
    rate: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime]

    __table_args__ = (
        sa.CheckConstraint("debit_transfer_id <> credit_transfer_id", name="two_legs"),
        sa.CheckConstraint("rate ~ '^[0-9]+(\\.[0-9]+)?$'", name="rate_format"),
    )


class PeriodLock(Base):
    """Every move of the period lock (insert-only; the lock is the latest `locked_until`).
    Nothing is posted at or before it (a trigger on entries refuses it), and a move is only
    forward (a trigger on this table). `entries_watermark`: the highest entry id when it moved,
    with no posting in flight, so every later entry must lie after the period."""

    __tablename__ = "period_locks"

    locked_until: Mapped[dt.datetime] = mapped_column(primary_key=True)
    entries_watermark: Mapped[int]
    created_at: Mapped[dt.datetime]


class AccountMonitor(Base):
    __tablename__ = "account_monitors"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("accounts.id"))
    field: Mapped[str] = mapped_column(sa.String(9))
    operator: Mapped[str] = mapped_column(sa.String(3))
    value: Mapped[int]
    # How many times it fired: the CloudEvents sequence of its events (subject: the monitor).
    trigger_count: Mapped[int] = mapped_column(server_default="0")
    created_at: Mapped[dt.datetime]

    __table_args__ = (
        sa.CheckConstraint("field IN ('posted', 'available')", name="field"),
        sa.CheckConstraint("operator IN ('lt', 'lte', 'gt', 'gte')", name="operator"),
        sa.CheckConstraint("trigger_count >= 0", name="trigger_count_nonnegative"),
        sa.Index("ix_account_monitors_account_id_id", "account_id", "id"),
    )
