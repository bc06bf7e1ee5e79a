"""The account row: identity, rules and the four balance components it carries."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ledger.db import Base

# available >= min_balance, computed in numeric so the check itself can never overflow
FLOOR_CHECK = (
    "min_balance IS NULL OR (CASE normal_balance "
    "WHEN 'credit' THEN posted_credits::numeric - posted_debits - pending_debits "
    "ELSE posted_debits::numeric - posted_credits - pending_credits END) >= min_balance"
)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(128), unique=True)
    currency: Mapped[str] = mapped_column(sa.String(12))
    normal_balance: Mapped[str] = mapped_column(sa.String(6))
    min_balance: Mapped[int | None]
    status: Mapped[str] = mapped_column(sa.String(8))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    version: Mapped[int]
    posted_debits: Mapped[int]
    posted_credits: Mapped[int]
    pending_debits: Mapped[int]
    pending_credits: Mapped[int]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]

    __table_args__ = (
        sa.CheckConstraint("normal_balance IN ('debit', 'credit')", name="normal_balance"),
        sa.CheckConstraint("status IN ('active', 'frozen', 'closed')", name="status"),
        sa.CheckConstraint("version >= 1", name="version_positive"),
        sa.CheckConstraint(
            "posted_debits >= 0 AND posted_credits >= 0 "
            "AND pending_debits >= 0 AND pending_credits >= 0",
            name="balances_nonnegative",
        ),
        sa.CheckConstraint(FLOOR_CHECK, name="floor"),
        sa.CheckConstraint(
            "status <> 'closed' OR (posted_debits = posted_credits "
            "AND pending_debits = 0 AND pending_credits = 0)",
            name="closed_is_empty",
        ),
        sa.CheckConstraint("currency ~ '^[A-Z0-9]{3,12}$'", name="currency_format"),
        sa.CheckConstraint("code ~ '^[A-Za-z0-9:._-]{1,128}$'", name="code_format"),
        sa.Index("ix_accounts_currency_status_id", "currency", "status", "id"),
        # Room on each page for the next versions of hot rows (migration 0004).
        {"postgresql_with": {"fillfactor": 30}},
    )
