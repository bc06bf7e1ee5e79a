"""Account request and response bodies, the responses built from domain state."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

from ledger.core import limits
from ledger.core.schemas import (
    AccountCode,
    Currency,
    Metadata,
    SignedBalance,
    Strict,
    metadata_field,
)
from ledger.posting.state import AccountState

MinBalance = Annotated[int, msgspec.Meta(ge=-limits.AMOUNT_MAX, le=limits.AMOUNT_MAX)]
Status = Literal["active", "frozen", "closed"]

UNSET: msgspec.UnsetType = msgspec.UNSET


class AccountCreate(Strict):
    code: AccountCode
    currency: Currency
    normal_balance: Literal["debit", "credit"]
    id: uuid.UUID | None = None
    min_balance: MinBalance | msgspec.UnsetType | None = UNSET
    metadata: Metadata = metadata_field()  # absent or null: {}


class AccountPatch(Strict):
    metadata: Metadata = metadata_field()  # absent: unchanged; null: {}
    status: Status | msgspec.UnsetType = UNSET
    min_balance: MinBalance | msgspec.UnsetType | None = UNSET


class Balances(msgspec.Struct):
    posted: SignedBalance
    available: int
    posted_debits: int
    posted_credits: int
    pending_debits: int
    pending_credits: int


class AccountOut(msgspec.Struct):
    id: uuid.UUID
    code: str
    currency: str
    normal_balance: str
    min_balance: int | None
    status: str
    metadata: Metadata
    version: int
    created_at: dt.datetime
    balances: Balances


class EntryOut(msgspec.Struct):
    sequence: int
    transfer_id: uuid.UUID
    direction: str
    amount: int
    balance_after: int
    posted_at: dt.datetime


class AccountPage(msgspec.Struct):
    data: list[AccountOut]
    next_cursor: str | None


class EntryPage(msgspec.Struct):
    data: list[EntryOut]
    next_cursor: str | None


class BalanceAsOf(msgspec.Struct):
    account_id: uuid.UUID
    as_of: dt.datetime
    posted: int
    sequence: int


def balances_of(account: AccountState) -> Balances:
    return Balances(
        posted=account.posted,
        available=account.available,
        posted_debits=account.posted_debits,
        posted_credits=account.posted_credits,
        pending_debits=account.pending_debits,
        pending_credits=account.pending_credits,
    )


def account_out(account: AccountState) -> AccountOut:
    return AccountOut(
        id=account.id,
        code=account.code,
        currency=account.currency,
        normal_balance=account.normal_balance,
        min_balance=account.min_balance,
        status=account.status,
        metadata=account.metadata,
        version=account.version,
        created_at=account.created_at,
        balances=balances_of(account),
    )
