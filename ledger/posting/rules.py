"""The posting rules on locked account state: pure functions, no I/O.

A movement is described by how much it adds to (or removes from) each balance component of the
two accounts. Every rule is checked on the proposed values *before* anything changes, so a
refused movement leaves the in-memory state exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from ledger.core import limits
from ledger.core.errors import (
    AccountNotActive,
    AmountOverflow,
    CurrencyMismatch,
    InsufficientFunds,
    InvariantViolation,
    SameAccount,
)


@dataclass(slots=True)
class AccountState:
    id: uuid.UUID
    code: str
    currency: str
    normal_balance: str
    min_balance: int | None
    status: str
    metadata: dict[str, Any]
    version: int
    posted_debits: int
    posted_credits: int
    pending_debits: int
    pending_credits: int
    created_at: dt.datetime
    updated_at: dt.datetime
    changed: bool = field(default=False, compare=False)

    @property
    def posted(self) -> int:
        return posted_balance(self.normal_balance, self.posted_debits, self.posted_credits)

    @property
    def available(self) -> int:
        return available_balance(
            self.normal_balance,
            self.posted_debits,
            self.posted_credits,
            self.pending_debits,
            self.pending_credits,
        )


def posted_balance(normal_balance: str, posted_debits: int, posted_credits: int) -> int:
    if normal_balance == "credit":
        return posted_credits - posted_debits
    return posted_debits - posted_credits


def available_balance(
    normal_balance: str,
    posted_debits: int,
    posted_credits: int,
    pending_debits: int,
    pending_credits: int,
) -> int:
    posted = posted_balance(normal_balance, posted_debits, posted_credits)
    if normal_balance == "credit":
        return posted - pending_debits
    return posted - pending_credits


@dataclass(frozen=True, slots=True)
class Delta:
    """Change to one account's four balance components (each may be negative: a release)."""

    posted_debits: int = 0
    posted_credits: int = 0
    pending_debits: int = 0
    pending_credits: int = 0


def check_pair(debit: AccountState, credit: AccountState, currency: str | None) -> None:
    """Rules about the two accounts themselves, independent of amounts."""
    if debit.id == credit.id:
        raise SameAccount("debit_account_id and credit_account_id must differ")
    if debit.currency != credit.currency:
        raise CurrencyMismatch(
            f"debit account is in {debit.currency}, credit account in {credit.currency}"
        )
    if currency is not None and currency != debit.currency:
        raise CurrencyMismatch(f"transfer currency {currency} differs from {debit.currency}")


def check_active(*accounts: AccountState) -> None:
    for account in accounts:
        if account.status != "active":
            raise AccountNotActive(f"account {account.id} is {account.status}")


def check_delta(account: AccountState, delta: Delta) -> None:
    """Would `delta` keep every component in range and the account above its floor?"""
    pd = account.posted_debits + delta.posted_debits
    pc = account.posted_credits + delta.posted_credits
    qd = account.pending_debits + delta.pending_debits
    qc = account.pending_credits + delta.pending_credits
    if min(pd, pc, qd, qc) < 0:
        # Only a bug could ask for this: releases never exceed what was held.
        raise InvariantViolation(f"negative balance component on account {account.id}")
    if max(pd, pc, qd, qc) > limits.AMOUNT_MAX:
        raise AmountOverflow(f"account {account.id} balance would exceed {limits.AMOUNT_MAX}")
    available = available_balance(account.normal_balance, pd, pc, qd, qc)
    if available < limits.BALANCE_MIN:
        raise AmountOverflow(f"account {account.id} balance would go below {limits.BALANCE_MIN}")
    if account.min_balance is not None and available < account.min_balance:
        before = account.available
        if available < before:
            raise InsufficientFunds(
                f"account {account.id} available balance {before} cannot cover this "
                f"(floor {account.min_balance})"
            )


def apply_delta(account: AccountState, delta: Delta, now: dt.datetime) -> None:
    account.posted_debits += delta.posted_debits
    account.posted_credits += delta.posted_credits
    account.pending_debits += delta.pending_debits
    account.pending_credits += delta.pending_credits
    account.version += 1
    account.updated_at = now
    account.changed = True


def move(
    debit: AccountState,
    credit: AccountState,
    debit_delta: Delta,
    credit_delta: Delta,
    now: dt.datetime,
) -> None:
    """Check both sides first, then change both: all or nothing."""
    check_delta(debit, debit_delta)
    check_delta(credit, credit_delta)
    apply_delta(debit, debit_delta, now)
    apply_delta(credit, credit_delta, now)


def post_deltas(amount: int) -> tuple[Delta, Delta]:
    return Delta(posted_debits=amount), Delta(posted_credits=amount)


def hold_deltas(amount: int) -> tuple[Delta, Delta]:
    return Delta(pending_debits=amount), Delta(pending_credits=amount)


def settle_deltas(held: int, amount: int) -> tuple[Delta, Delta]:
    """Post `amount` of a hold of `held` and release the rest, in one step."""
    return (
        Delta(posted_debits=amount, pending_debits=-held),
        Delta(posted_credits=amount, pending_credits=-held),
    )


def release_deltas(held: int) -> tuple[Delta, Delta]:
    return Delta(pending_debits=-held), Delta(pending_credits=-held)
