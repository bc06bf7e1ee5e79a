"""Every event the ledger publishes, its type and its payload, built from domain state.

The payloads are this module's own msgspec Structs, not the HTTP response bodies: an HTTP
response may change without changing the event contract. Field names, their order and their
JSON types are the contract (consumers and tests/test_event_payloads.py pin them): msgspec
writes a Struct's fields in declaration order, UUIDs as strings, datetimes as RFC 3339.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

import msgspec

from ledger.core.context import WriteContext
from ledger.core.schemas import MetadataData
from ledger.posting.monitors import MonitorState
from ledger.posting.state import AccountState, TransferState
from outbox.writer import PendingEvent

ACCOUNT_CREATED = "ledger.account.created"
ACCOUNT_UPDATED = "ledger.account.updated"
ACCOUNT_BALANCE_CHANGED = "ledger.account.balance_changed"
TRANSFER_EVENT_PREFIX = "ledger.transfer."
ACCOUNT_MONITOR_TRIGGERED = "ledger.account.monitor_triggered"

# ledger.transfer.<kind>: the state a transfer reached, or `reversed` for a new reversal.
TransferEventKind = Literal["pending", "posted", "voided", "expired", "reversed"]


class BalancesData(msgspec.Struct):
    posted: int
    available: int
    posted_debits: int
    posted_credits: int
    pending_debits: int
    pending_credits: int


class AccountData(msgspec.Struct):
    """`data` of ledger.account.created and ledger.account.updated."""

    id: uuid.UUID
    code: str
    currency: str
    normal_balance: str
    min_balance: int | None
    status: str
    metadata: MetadataData  # the text as kept, written verbatim
    version: int
    created_at: dt.datetime
    balances: BalancesData


class BalanceChangedData(msgspec.Struct):
    """`data` of ledger.account.balance_changed."""

    account_id: uuid.UUID
    transfer_id: uuid.UUID
    version: int
    balances: BalancesData


class TransferData(msgspec.Struct, omit_defaults=True):
    """`data` of every ledger.transfer.* event. `imported_at` is there only for an imported
    transfer (the instant it happened; the envelope's `time` is when it was written)."""

    id: uuid.UUID
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: int
    currency: str
    state: str
    posted_amount: int
    reference: str | None
    metadata: MetadataData  # the text as kept, written verbatim
    timeout_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    reversal_of: uuid.UUID | None
    imported_at: dt.datetime | None = None


def balances_data(account: AccountState) -> BalancesData:
    return BalancesData(
        posted=account.posted,
        available=account.available,
        posted_debits=account.posted_debits,
        posted_credits=account.posted_credits,
        pending_debits=account.pending_debits,
        pending_credits=account.pending_credits,
    )


def account_data(account: AccountState) -> AccountData:
    return AccountData(
        id=account.id,
        code=account.code,
        currency=account.currency,
        normal_balance=account.normal_balance,
        min_balance=account.min_balance,
        status=account.status,
        metadata=account.metadata,
        version=account.version,
        created_at=account.created_at,
        balances=balances_data(account),
    )


def balance_changed_data(account: AccountState, transfer: TransferState) -> BalanceChangedData:
    return BalanceChangedData(
        account_id=account.id,
        transfer_id=transfer.id,
        version=account.version,
        balances=balances_data(account),
    )


def transfer_data(transfer: TransferState) -> TransferData:
    return TransferData(
        id=transfer.id,
        debit_account_id=transfer.debit_account_id,
        credit_account_id=transfer.credit_account_id,
        amount=transfer.amount,
        currency=transfer.currency,
        state=transfer.state,
        posted_amount=transfer.posted_amount,
        reference=transfer.reference,
        metadata=transfer.metadata,
        timeout_at=transfer.timeout_at,
        created_at=transfer.created_at,
        updated_at=transfer.updated_at,
        reversal_of=transfer.reversal_of,
        imported_at=transfer.imported_at,
    )


# -- the events --------------------------------------------------------------------------------
# Account events carry the account's version as their sequence (per-subject order for
# consumers); transfer events carry none. `ctx` names the request an event came from when one
# transaction serves several (group commit); None: the transaction's own.


def account_created(account: AccountState) -> PendingEvent:
    return PendingEvent(
        ACCOUNT_CREATED, account.id, account_data(account), sequence=account.version
    )


def account_updated(account: AccountState) -> PendingEvent:
    return PendingEvent(
        ACCOUNT_UPDATED, account.id, account_data(account), sequence=account.version
    )


def balance_changed(
    account: AccountState, transfer: TransferState, ctx: WriteContext | None = None
) -> PendingEvent:
    return PendingEvent(
        type=ACCOUNT_BALANCE_CHANGED,
        subject=account.id,
        sequence=account.version,
        ctx=ctx,
        data=balance_changed_data(account, transfer),
    )


def transfer_event(
    kind: TransferEventKind, transfer: TransferState, ctx: WriteContext | None = None
) -> PendingEvent:
    return PendingEvent(
        type=TRANSFER_EVENT_PREFIX + kind,
        subject=transfer.id,
        data=transfer_data(transfer),
        ctx=ctx,
    )


# -- money movement: balance monitors ------------------------------------------------------------


class MonitorData(msgspec.Struct):
    id: uuid.UUID
    account_id: uuid.UUID
    field: str
    operator: str
    value: int
    trigger_count: int
    created_at: dt.datetime


class MonitorTriggeredData(msgspec.Struct):
    """`data` of ledger.account.monitor_triggered: the monitor (its `trigger_count` is the
    event's sequence), the account, its balances right after the change, and the transfer that
    made the change."""

    monitor: MonitorData
    account_id: uuid.UUID
    transfer_id: uuid.UUID
    version: int
    balances: BalancesData


def monitor_data(monitor: MonitorState) -> MonitorData:
    return MonitorData(
        id=monitor.id,
        account_id=monitor.account_id,
        field=monitor.field,
        operator=monitor.operator,
        value=monitor.value,
        trigger_count=monitor.trigger_count,
        created_at=monitor.created_at,
    )


def monitor_triggered(
    monitor: MonitorState,
    account: AccountState,
    transfer: TransferState,
    ctx: WriteContext | None = None,
) -> PendingEvent:
    """Subject: the monitor (so account sequences stay one event per change); its sequence is
    the monitor's trigger count, gapless per monitor."""
    return PendingEvent(
        type=ACCOUNT_MONITOR_TRIGGERED,
        subject=monitor.id,
        sequence=monitor.trigger_count,
        ctx=ctx,
        data=MonitorTriggeredData(
            monitor=monitor_data(monitor),
            account_id=account.id,
            transfer_id=transfer.id,
            version=account.version,
            balances=balances_data(account),
        ),
    )
