"""Balancing transfers (TigerBeetle's): `amount` is a ceiling, and the transfer moves the most,
up to it, that the two accounts allow, decided on their locked balances. Pure, no I/O.

Which side can limit: a debit lowers the available balance of a credit-normal account (and
raises a debit-normal one's), a credit lowers a debit-normal account's. A side that the movement
lowers may go down to its floor (`min_balance`; with no floor, to the lowest balance the ledger
represents). Either side may also not grow a balance component past the largest amount. A hold
(`pending`) lowers the same sides as a post.
"""

from __future__ import annotations

from ledger.core import limits
from ledger.core.errors import NothingToMove
from ledger.posting.state import AccountState


def _room(account: AccountState, lowers: bool, component: int) -> int:
    """How much a movement may add to `component` of this account."""
    room = limits.AMOUNT_MAX - component
    if lowers:
        floor = limits.BALANCE_MIN
        if account.min_balance is not None:
            floor = max(account.min_balance, floor)
        room = min(room, account.available - floor)
    return room


def balancing_amount(debit: AccountState, credit: AccountState, ceiling: int, pending: bool) -> int:
    """What a balancing transfer of at most `ceiling` moves; NothingToMove when nothing can."""
    debit_component = debit.pending_debits if pending else debit.posted_debits
    credit_component = credit.pending_credits if pending else credit.posted_credits
    amount = min(
        ceiling,
        _room(debit, debit.normal_balance == "credit", debit_component),
        _room(credit, credit.normal_balance == "debit", credit_component),
    )
    if amount < 1:
        raise NothingToMove(
            f"account {debit.id} has nothing it can spend above its floor "
            f"(available {debit.available}, floor {debit.min_balance})"
            if debit.normal_balance == "credit"
            else f"the accounts {debit.id} and {credit.id} allow no movement"
        )
    return amount
