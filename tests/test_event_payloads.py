"""The event contract: every event type's payload, pinned byte for byte (field names, their
order, JSON types, UUID and datetime encoding), built from domain state alone: no HTTP, no
database. The expected texts were captured from the payloads as the ledger wrote them before
the events got their own Structs (ledger/posting/events.py); an HTTP schema change must never
change one of them."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import replace
from typing import Any

import msgspec
import pytest

from ledger.core.context import Actor, WriteContext
from ledger.posting import events
from ledger.posting.state import AccountState, TransferState
from outbox.writer import PendingEvent

T0 = dt.datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 3, 4, 5, 7, 0, tzinfo=dt.UTC)
# A timestamp read back with another offset keeps it: the payload does not convert it.
PLUS_TWO = dt.datetime(2026, 3, 4, 7, 7, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
A = uuid.UUID("0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b")
B = uuid.UUID("0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5c")
T = uuid.UUID("0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5d")
R = uuid.UUID("0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5e")
CTX = WriteContext(actor=Actor.system("test"), now=T1)

ACCOUNT = AccountState(
    id=A,
    code="cust:1",
    currency="EUR",
    normal_balance="credit",
    min_balance=0,
    status="active",
    metadata={"tier": "gold", "n": [1, 2.5, None], "deep": {"x": True}},
    version=7,
    posted_debits=100,
    posted_credits=350,
    pending_debits=40,
    pending_credits=5,
    created_at=T0,
    updated_at=T1,
)
DEBIT_ACCOUNT = replace(
    ACCOUNT,
    normal_balance="debit",
    min_balance=None,
    status="frozen",
    metadata={},
    version=1,
    posted_debits=9,
    posted_credits=2,
    pending_debits=0,
    pending_credits=3,
)
PENDING = TransferState(
    id=T,
    debit_account_id=A,
    credit_account_id=B,
    amount=250,
    currency="EUR",
    state="pending",
    posted_amount=0,
    reversed_amount=0,
    reference="order-17",
    metadata={"k": "v"},
    timeout_at=PLUS_TWO,
    created_at=T0,
    updated_at=T1,
    reversal_of=None,
    created_pending=True,
    timeout_seconds=3600,
)

ID_A = '"id":"0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"'
ACCOUNT_BALANCES = (
    '{"posted":250,"available":210,"posted_debits":100,"posted_credits":350,'
    '"pending_debits":40,"pending_credits":5}'
)
ACCOUNT_JSON = (
    "{" + ID_A + ',"code":"cust:1","currency":"EUR","normal_balance":"credit",'
    '"min_balance":0,"status":"active",'
    '"metadata":{"tier":"gold","n":[1,2.5,null],"deep":{"x":true}},"version":7,'
    '"created_at":"2026-03-04T05:06:07.123456Z","balances":' + ACCOUNT_BALANCES + "}"
)
TRANSFER_HEAD = (
    '{"id":"0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5d",'
    '"debit_account_id":"0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b",'
    '"credit_account_id":"0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5c","amount":250,"currency":"EUR",'
)
TRANSFER_TAIL = (
    '"created_at":"2026-03-04T05:06:07.123456Z","updated_at":"2026-03-04T05:07:00Z",'
    '"reversal_of":null}'
)


def encoded(event: PendingEvent) -> str:
    """The event's `data` as msgspec writes it into the outbox envelope."""
    return msgspec.json.encode(event.data).decode()


def held(state: str) -> str:
    return (
        TRANSFER_HEAD + f'"state":"{state}","posted_amount":0,"reference":"order-17",'
        '"metadata":{"k":"v"},"timeout_at":"2026-03-04T07:07:00.000005+02:00",' + TRANSFER_TAIL
    )


def test_account_created() -> None:
    event = events.account_created(ACCOUNT)
    assert (event.type, event.subject, event.sequence, event.ctx) == (
        "ledger.account.created",
        A,
        7,
        None,
    )
    assert encoded(event) == ACCOUNT_JSON
    debit = events.account_created(DEBIT_ACCOUNT)
    assert encoded(debit) == (
        "{" + ID_A + ',"code":"cust:1","currency":"EUR","normal_balance":"debit",'
        '"min_balance":null,"status":"frozen","metadata":{},"version":1,'
        '"created_at":"2026-03-04T05:06:07.123456Z","balances":{"posted":7,"available":4,'
        '"posted_debits":9,"posted_credits":2,"pending_debits":0,"pending_credits":3}}'
    )


def test_account_updated() -> None:
    account = replace(ACCOUNT, min_balance=-500, status="frozen", version=8)
    event = events.account_updated(account)
    assert (event.type, event.subject, event.sequence, event.ctx) == (
        "ledger.account.updated",
        A,
        8,
        None,
    )
    assert encoded(event) == (
        "{" + ID_A + ',"code":"cust:1","currency":"EUR","normal_balance":"credit",'
        '"min_balance":-500,"status":"frozen",'
        '"metadata":{"tier":"gold","n":[1,2.5,null],"deep":{"x":true}},"version":8,'
        '"created_at":"2026-03-04T05:06:07.123456Z","balances":' + ACCOUNT_BALANCES + "}"
    )


def test_account_balance_changed() -> None:
    event = events.balance_changed(ACCOUNT, PENDING, CTX)
    assert (event.type, event.subject, event.sequence, event.ctx) == (
        "ledger.account.balance_changed",
        A,
        7,
        CTX,
    )
    assert encoded(event) == (
        '{"account_id":"0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b",'
        '"transfer_id":"0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5d","version":7,'
        '"balances":' + ACCOUNT_BALANCES + "}"
    )
    debit = events.balance_changed(DEBIT_ACCOUNT, PENDING, CTX)
    assert encoded(debit).endswith(
        '"version":1,"balances":{"posted":7,"available":4,"posted_debits":9,'
        '"posted_credits":2,"pending_debits":0,"pending_credits":3}}'
    )


@pytest.mark.parametrize("kind", ["pending", "voided", "expired"])
def test_transfer_pending_voided_expired(kind: Any) -> None:
    event = events.transfer_event(kind, replace(PENDING, state=kind), CTX)
    assert (event.type, event.subject, event.sequence, event.ctx) == (
        f"ledger.transfer.{kind}",
        T,
        None,
        CTX,
    )
    assert encoded(event) == held(kind)


def test_transfer_posted() -> None:
    posted = replace(PENDING, state="posted", posted_amount=200, timeout_at=None, reference=None)
    event = events.transfer_event("posted", posted, CTX)
    assert (event.type, event.subject, event.sequence) == ("ledger.transfer.posted", T, None)
    assert encoded(event) == (
        TRANSFER_HEAD + '"state":"posted","posted_amount":200,"reference":null,'
        '"metadata":{"k":"v"},"timeout_at":null,' + TRANSFER_TAIL
    )


def test_transfer_reversed() -> None:
    reversal = replace(
        PENDING,
        id=R,
        debit_account_id=B,
        credit_account_id=A,
        amount=50,
        state="posted",
        posted_amount=50,
        metadata={},
        timeout_at=None,
        reversal_of=T,
        created_pending=False,
        timeout_seconds=None,
    )
    event = events.transfer_event("reversed", reversal, CTX)
    assert (event.type, event.subject, event.sequence) == ("ledger.transfer.reversed", R, None)
    assert encoded(event) == (
        '{"id":"0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5e",'
        '"debit_account_id":"0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5c",'
        '"credit_account_id":"0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b","amount":50,'
        '"currency":"EUR","state":"posted","posted_amount":50,"reference":"order-17",'
        '"metadata":{},"timeout_at":null,"created_at":"2026-03-04T05:06:07.123456Z",'
        '"updated_at":"2026-03-04T05:07:00Z","reversal_of":"0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5d"}'
    )
