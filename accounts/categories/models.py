"""The categories' tables (migration 0011_reporting): the tree and its membership rows.

No balance is stored here: a category's balance is summed at read time from its accounts'
balances, so no transfer ever locks or writes a category row."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ledger.core.db import Base


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(128), unique=True)
    currency: Mapped[str] = mapped_column(sa.String(12))
    normal_balance: Mapped[str] = mapped_column(sa.String(6))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("categories.id"))
    # As on accounts: the client's text is what is answered, the jsonb copy serves queries.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    metadata_text: Mapped[str]
    version: Mapped[int]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]

    __table_args__ = (
        sa.CheckConstraint("normal_balance IN ('debit', 'credit')", name="normal_balance"),
        sa.CheckConstraint("version >= 1", name="version_positive"),
        sa.CheckConstraint("parent_id IS NULL OR parent_id <> id", name="not_own_parent"),
        sa.CheckConstraint("currency ~ '^[A-Z0-9]{3,12}$'", name="currency_format"),
        sa.CheckConstraint("code ~ '^[A-Za-z0-9:._-]{1,128}$'", name="code_format"),
        sa.Index("ix_categories_parent_id_id", "parent_id", "id"),
    )


class CategoryAccount(Base):
    """An account's membership of a category (an account may be in several)."""

    __tablename__ = "category_accounts"

    category_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("categories.id"), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("accounts.id"), primary_key=True)
    created_at: Mapped[dt.datetime]

    __table_args__ = (sa.Index("ix_category_accounts_account_id", "account_id"),)
