"""The ledger's tables, owned by the posting engine, their only writer of money.

Accounts (identity, rules and the four balance components they carry), transfers, their posted
entries (append-only) and tombstones of ids voided before creation. `accounts/` and `transfers/`
read them through their own repositories."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from ledger.core.db import Base

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
    # The client's metadata text, answered as kept (migration 0006); `metadata` is its jsonb
    # copy, for queries only: jsonb reprints numbers, so it is never read back.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    metadata_text: Mapped[str]
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
        # metadata[KEY]=VALUE filters: containment (`@>`) on the jsonb copy (migration 0011).
        sa.Index(
            "ix_accounts_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ),
        # Room on each page for the next versions of hot rows (migration 0004).
        {"postgresql_with": {"fillfactor": 30}},
    )


class Transfer(Base):
    __tablename__ = "transfers"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    debit_account_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("accounts.id"))
    credit_account_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("accounts.id"))
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(sa.String(12))
    state: Mapped[str] = mapped_column(sa.String(8))
    posted_amount: Mapped[int]
    reversed_amount: Mapped[int]
    reference: Mapped[str | None] = mapped_column(sa.String(255))
    # The client's metadata text, answered as kept (migration 0006); `metadata` is its jsonb
    # copy, for queries only: jsonb reprints numbers, so it is never read back.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    metadata_text: Mapped[str]
    timeout_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    reversal_of: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("transfers.id"))
    # What the client asked, kept to tell a repeated create from a different one.
    created_pending: Mapped[bool]
    timeout_seconds: Mapped[int | None]
    # Money movement (migration 0012): the instant an imported transfer happened (its entries'
    # posted_at), and the ceiling a balancing transfer asked for (`amount` is what moved).
    imported_at: Mapped[dt.datetime | None]
    amount_ceiling: Mapped[int | None]
    # Both accounts' balances right after the transfer's last change (ledger.posting.snapshots):
    # NULL for transfers written before migration 0011.
    balances_after: Mapped[list[int] | None] = mapped_column(ARRAY(sa.BigInteger))

    __table_args__ = (
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint("debit_account_id <> credit_account_id", name="distinct_accounts"),
        sa.CheckConstraint("state IN ('pending', 'posted', 'voided', 'expired')", name="state"),
        sa.CheckConstraint(
            "posted_amount >= 0 AND posted_amount <= amount", name="posted_within_amount"
        ),
        sa.CheckConstraint(
            "(state = 'posted') = (posted_amount > 0)", name="posted_iff_posted_amount"
        ),
        sa.CheckConstraint(
            "reversed_amount >= 0 AND reversed_amount <= posted_amount",
            name="reversed_within_posted",
        ),
        sa.Index("ix_transfers_debit_account_id_id", "debit_account_id", "id"),
        sa.Index("ix_transfers_credit_account_id_id", "credit_account_id", "id"),
        sa.Index("ix_transfers_state_id", "state", "id"),
        sa.Index(
            "ix_transfers_pending_timeout",
            "timeout_at",
            postgresql_where=sa.text("state = 'pending' AND timeout_at IS NOT NULL"),
        ),
        # Only reversals: every lookup asks `reversal_of = <id>` (migration 0025_wal_indexes).
        sa.Index(
            "ix_transfers_reversal_of",
            "reversal_of",
            postgresql_where=sa.text("reversal_of IS NOT NULL"),
        ),
        # No pending list (migration 0025_wal_indexes): its meta page was rewritten per insert.
        sa.Index(
            "ix_transfers_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
            postgresql_with={"fastupdate": "off"},
        ),
        sa.CheckConstraint(
            "amount_ceiling IS NULL OR amount <= amount_ceiling", name="amount_within_ceiling"
        ),
        sa.CheckConstraint(
            "balances_after IS NULL OR cardinality(balances_after) = 12",
            name="balances_after_shape",
        ),
    )


class Entry(Base):
    """One leg of a posted movement. Append-only: a trigger refuses UPDATE and DELETE."""

    __tablename__ = "entries"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("accounts.id"))
    transfer_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("transfers.id"))
    direction: Mapped[str] = mapped_column(sa.String(6))
    amount: Mapped[int]
    balance_after: Mapped[int]
    sequence: Mapped[int]
    posted_at: Mapped[dt.datetime]

    __table_args__ = (
        sa.CheckConstraint("direction IN ('debit', 'credit')", name="direction"),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.UniqueConstraint("account_id", "sequence"),
        sa.Index("ix_entries_transfer_id", "transfer_id"),
        # "The last entry at or before T" of an account in one probe (balance?as_of, reports).
        sa.Index("ix_entries_account_id_posted_at_sequence", "account_id", "posted_at", "sequence"),
    )


class VoidedTransferId(Base):
    """An id voided before the ledger saw it (TCC empty cancel); refuses a late create."""

    __tablename__ = "voided_transfer_ids"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime]
