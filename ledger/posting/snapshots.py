"""Balances after a transfer: both accounts' balances right after the transfer's change.

Taken by the engine from the locked state the transfer was decided on, at the moment of its
move (so each item of a batch sees its own moment, not the batch's end), kept on the transfer's
row (`transfers.balances_after`) and answered by every transfer response, a later `GET` included:
no read after commit, no second source that could disagree with what was decided.
"""

from __future__ import annotations

import uuid

from ledger.core.errors import InvariantViolation
from ledger.posting.state import AccountState, TransferState

# The order of each account's six values in `transfers.balances_after` (the balances object of
# an account), the debit account's first, then the credit account's.
BALANCE_FIELDS = (
    "posted",
    "available",
    "posted_debits",
    "posted_credits",
    "pending_debits",
    "pending_credits",
)
WIDTH = 2 * len(BALANCE_FIELDS)


def account_values(account: AccountState) -> list[int]:
    return [
        account.posted,
        account.available,
        account.posted_debits,
        account.posted_credits,
        account.pending_debits,
        account.pending_credits,
    ]


def record_after(transfer: TransferState, debit: AccountState, credit: AccountState) -> None:
    """Keep both accounts' balances, as they stand now, on the transfer that moved them."""
    if debit.id != transfer.debit_account_id or credit.id != transfer.credit_account_id:
        raise InvariantViolation(f"balances of transfer {transfer.id} taken from other accounts")
    transfer.balances_after = account_values(debit) + account_values(credit)


def balances_after(transfer: TransferState) -> dict[uuid.UUID, dict[str, int]]:
    """`{debit account id: balances, credit account id: balances}`; empty for a transfer
    written before the ledger kept them."""
    values = transfer.balances_after
    if values is None:
        return {}
    if len(values) != WIDTH:
        raise InvariantViolation(f"transfer {transfer.id} keeps {len(values)} balance values")
    half = len(BALANCE_FIELDS)
    return {
        transfer.debit_account_id: dict(zip(BALANCE_FIELDS, values[:half], strict=True)),
        transfer.credit_account_id: dict(zip(BALANCE_FIELDS, values[half:], strict=True)),
    }
