"""Category request and response bodies, the responses built from domain state."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

import msgspec

from ledger.core.schemas import AccountCode, Currency, Metadata, Strict, metadata_field
from ledger.posting.categories import CategoryState

UNSET: msgspec.UnsetType = msgspec.UNSET


class CategoryCreate(Strict):
    code: AccountCode
    currency: Currency
    normal_balance: Literal["debit", "credit"]
    id: uuid.UUID | None = None
    parent_id: uuid.UUID | None = None
    metadata: Metadata = metadata_field()  # absent or null: {}


class CategoryPatch(Strict):
    parent_id: uuid.UUID | msgspec.UnsetType | None = UNSET  # null: a root category
    metadata: Metadata = metadata_field()  # absent: unchanged; null: {}


class MembershipPut(Strict):
    """A membership PUT takes no fields: no body, or an empty object."""


class CategoryOut(msgspec.Struct):
    id: uuid.UUID
    code: str
    currency: str
    normal_balance: str
    parent_id: uuid.UUID | None
    metadata: Metadata
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class CategoryPage(msgspec.Struct):
    data: list[CategoryOut]
    next_cursor: str | None


class MembershipOut(msgspec.Struct):
    category_id: uuid.UUID
    account_id: uuid.UUID
    category_version: int


class CategoryBalances(msgspec.Struct):
    """Summed over the category's accounts and its descendants' (each account once). `posted`
    and `available` are signed by the category's normal balance; the four components are plain
    sums. As of a past instant only `posted` is known (each entry keeps the posted balance
    after it; holds keep no history), so the others are null then."""

    posted: int
    available: int | None
    posted_debits: int | None
    posted_credits: int | None
    pending_debits: int | None
    pending_credits: int | None


class CategoryBalanceOut(msgspec.Struct):
    category_id: uuid.UUID
    currency: str
    normal_balance: str
    as_of: dt.datetime | None  # null: the balances now
    accounts: int  # how many distinct accounts were summed
    balances: CategoryBalances


def category_out(category: CategoryState) -> CategoryOut:
    return CategoryOut(
        id=category.id,
        code=category.code,
        currency=category.currency,
        normal_balance=category.normal_balance,
        parent_id=category.parent_id,
        metadata=category.metadata,
        version=category.version,
        created_at=category.created_at,
        updated_at=category.updated_at,
    )
