"""The trial balance's response body."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec


class TrialBalanceLine(msgspec.Struct):
    """One account: its posted balance on its normal side (the other side 0). A balance below
    zero stays on its normal side, negative, so each side adds up to what it holds."""

    account_id: uuid.UUID
    code: str
    normal_balance: str
    debit: int
    credit: int


class TrialBalanceOut(msgspec.Struct):
    as_of: dt.datetime
    currency: str
    accounts: list[TrialBalanceLine]
    total_debit: int
    total_credit: int
