"""Account categories as domain state, and the events of their changes.

A category groups accounts of one currency under a parent (a tree); its balance is summed at read
time from its accounts' balances, so it holds no money state of its own and the posting engine
never touches it. Its changes are events like an account's: the subject is the category id and
the `sequence` its version after the change (every change, membership included, adds one), so a
consumer checks a category's events for gaps as it checks an account's.

As in `ledger/posting/events.py`, the payloads are this module's own Structs, never the HTTP
responses; the AsyncAPI document is generated from them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import msgspec

from ledger.core.schemas import MetadataData
from outbox.writer import PendingEvent

CATEGORY_CREATED = "ledger.category.created"
CATEGORY_UPDATED = "ledger.category.updated"
CATEGORY_ACCOUNT_ADDED = "ledger.category.account_added"
CATEGORY_ACCOUNT_REMOVED = "ledger.category.account_removed"


@dataclass(slots=True)
class CategoryState:
    id: uuid.UUID
    code: str
    currency: str
    normal_balance: str
    parent_id: uuid.UUID | None
    metadata: msgspec.Raw  # the client's JSON text as kept (check_metadata)
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class CategoryData(msgspec.Struct):
    """`data` of ledger.category.created and ledger.category.updated."""

    id: uuid.UUID
    code: str
    currency: str
    normal_balance: str
    parent_id: uuid.UUID | None
    metadata: MetadataData  # the text as kept, written verbatim
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class CategoryMembershipData(msgspec.Struct):
    """`data` of ledger.category.account_added and ledger.category.account_removed."""

    category_id: uuid.UUID
    account_id: uuid.UUID
    version: int  # the category's version after the change


def category_data(category: CategoryState) -> CategoryData:
    return CategoryData(
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


def category_created(category: CategoryState) -> PendingEvent:
    return PendingEvent(
        CATEGORY_CREATED, category.id, category_data(category), sequence=category.version
    )


def category_updated(category: CategoryState) -> PendingEvent:
    return PendingEvent(
        CATEGORY_UPDATED, category.id, category_data(category), sequence=category.version
    )


def membership_changed(category: CategoryState, account_id: uuid.UUID, added: bool) -> PendingEvent:
    return PendingEvent(
        CATEGORY_ACCOUNT_ADDED if added else CATEGORY_ACCOUNT_REMOVED,
        category.id,
        CategoryMembershipData(
            category_id=category.id, account_id=account_id, version=category.version
        ),
        sequence=category.version,
    )
