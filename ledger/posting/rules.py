"""The posting rules on locked state: pure functions, no I/O.

A movement is described by how much it adds to (or removes from) each balance component of the
two accounts. Every rule is checked on the proposed values *before* anything changes, so a
refused movement leaves the in-memory state exactly as it was.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ledger.core import limits
from ledger.core.errors import (
    AccountNotActive,
    AmountOverflow,
    CurrencyMismatch,
    InsufficientFunds,
    InvariantViolation,
    PostExceedsPending,
    ReversalExceedsPosted,
    SameAccount,
    TransferNotPending,
    TransferNotPosted,
)
from ledger.core.schemas import same_metadata
from ledger.posting.commands import TransferCommand
from ledger.posting.state import AccountState, TransferState, available_balance


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


# -- transfers -------------------------------------------------------------------------------


def same_fields(existing: TransferState, command: TransferCommand) -> bool:
    """TigerBeetle's `exists` vs `exists_with_different_fields`, on what the client asked.
    Metadata is the same with the same members in any order (`same_metadata`), and differs when
    a number is written otherwise."""
    return (
        existing.reversal_of is None
        and existing.debit_account_id == command.debit_account_id
        and existing.credit_account_id == command.credit_account_id
        and (existing.amount_ceiling if command.balancing else existing.amount) == command.amount
        and (existing.amount_ceiling is not None) == command.balancing
        and existing.imported_at == command.imported_at
        and (command.currency is None or command.currency == existing.currency)
        and existing.created_pending == command.pending
        and (existing.timeout_seconds or 0) == (command.timeout_seconds or 0)
        and existing.reference == command.reference
        and same_metadata(existing.metadata, command.metadata)
    )


def already_posted(transfer: TransferState, amount: int | None) -> bool:
    """A repeated post: the transfer is posted, for the amount asked (or any, when none is)."""
    return transfer.state == "posted" and (amount is None or amount == transfer.posted_amount)


def check_pending(transfer: TransferState) -> None:
    if transfer.state != "pending":
        raise TransferNotPending(f"transfer {transfer.id} is {transfer.state}")


def is_due(transfer: TransferState, now: dt.datetime) -> bool:
    """A pending transfer past its timeout: it can only expire now."""
    return transfer.timeout_at is not None and transfer.timeout_at <= now


def post_amount(transfer: TransferState, amount: int | None, now: dt.datetime) -> int:
    """How much a post of this pending transfer confirms (all of it when `amount` is None)."""
    check_pending(transfer)
    if is_due(transfer, now):
        raise TransferNotPending(f"transfer {transfer.id} expired at {transfer.timeout_at}")
    posted = transfer.amount if amount is None else amount
    if posted > transfer.amount:
        raise PostExceedsPending(
            f"cannot post {posted}: transfer {transfer.id} holds {transfer.amount}"
        )
    return posted


def reversal_amount(original: TransferState, amount: int | None) -> int:
    """How much a reversal of this posted transfer moves back (all that is left when None)."""
    if original.state != "posted":
        raise TransferNotPosted(f"transfer {original.id} is {original.state}")
    remaining = original.posted_amount - original.reversed_amount
    reversed_now = remaining if amount is None else amount
    if reversed_now > remaining or reversed_now <= 0:
        raise ReversalExceedsPosted(
            f"transfer {original.id} has {remaining} left to reverse, asked {reversed_now}"
        )
    return reversed_now
