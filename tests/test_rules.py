"""Unit tests of the pure posting rules (ledger/posting/rules.py): no database, no I/O."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from ledger.core import limits
from ledger.core.errors import (
    AccountNotActive,
    AmountOverflow,
    CurrencyMismatch,
    InsufficientFunds,
    InvariantViolation,
    SameAccount,
)
from ledger.posting import rules
from ledger.posting.rules import Delta
from ledger.posting.state import AccountState

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MAX = limits.AMOUNT_MAX


def account(
    normal_balance: str = "credit",
    *,
    min_balance: int | None = 0,
    currency: str = "USD",
    status: str = "active",
    posted_debits: int = 0,
    posted_credits: int = 0,
    pending_debits: int = 0,
    pending_credits: int = 0,
) -> AccountState:
    return AccountState(
        id=uuid.uuid4(),
        code=f"a{uuid.uuid4().hex[:8]}",
        currency=currency,
        normal_balance=normal_balance,
        min_balance=min_balance,
        status=status,
        metadata={},
        version=1,
        posted_debits=posted_debits,
        posted_credits=posted_credits,
        pending_debits=pending_debits,
        pending_credits=pending_credits,
        created_at=NOW,
        updated_at=NOW,
    )


def snapshot(a: AccountState) -> tuple[int, int, int, int, int, bool]:
    return (
        a.posted_debits,
        a.posted_credits,
        a.pending_debits,
        a.pending_credits,
        a.version,
        a.changed,
    )


# -- balances --------------------------------------------------------------------------------


def test_credit_normal_balances() -> None:
    a = account(
        "credit", posted_debits=30, posted_credits=100, pending_debits=20, pending_credits=5
    )
    assert a.posted == 70
    # credit-normal: pending debits (outgoing holds) reduce what is available, pending credits
    # (incoming holds) do not add to it.
    assert a.available == 50


def test_debit_normal_balances() -> None:
    a = account("debit", posted_debits=100, posted_credits=30, pending_debits=5, pending_credits=20)
    assert a.posted == 70
    assert a.available == 50


# -- pair and status rules -------------------------------------------------------------------


def test_check_pair_refuses_same_account() -> None:
    a = account()
    with pytest.raises(SameAccount):
        rules.check_pair(a, a, None)


def test_check_pair_refuses_accounts_in_different_currencies() -> None:
    with pytest.raises(CurrencyMismatch):
        rules.check_pair(account(currency="USD"), account(currency="EUR"), None)


def test_check_pair_refuses_a_transfer_currency_that_differs() -> None:
    with pytest.raises(CurrencyMismatch):
        rules.check_pair(account(), account(), "EUR")
    rules.check_pair(account(), account(), "USD")
    rules.check_pair(account(), account(), None)


@pytest.mark.parametrize("status", ["frozen", "closed"])
def test_check_active_refuses_inactive_accounts(status: str) -> None:
    with pytest.raises(AccountNotActive):
        rules.check_active(account(), account(status=status))
    rules.check_active(account(), account())


# -- moves -----------------------------------------------------------------------------------


def test_post_moves_both_sides_and_bumps_versions() -> None:
    source = account("debit", min_balance=None)
    customer = account("credit")
    rules.move(source, customer, *rules.post_deltas(250), NOW)
    assert (source.posted, customer.posted) == (250, 250)
    assert (source.version, customer.version) == (2, 2)
    assert source.changed and customer.changed


def test_insufficient_funds_leaves_both_accounts_untouched() -> None:
    payer = account("credit", posted_credits=100)
    payee = account("credit")
    before = (snapshot(payer), snapshot(payee))
    with pytest.raises(InsufficientFunds):
        rules.move(payer, payee, *rules.post_deltas(101), NOW)
    assert (snapshot(payer), snapshot(payee)) == before


def test_exactly_the_available_balance_may_be_spent() -> None:
    payer = account("credit", posted_credits=100)
    payee = account("credit")
    rules.move(payer, payee, *rules.post_deltas(100), NOW)
    assert payer.available == 0


def test_overdraft_limit_is_a_negative_floor() -> None:
    payer = account("credit", min_balance=-50, posted_credits=10)
    payee = account("credit")
    rules.move(payer, payee, *rules.post_deltas(60), NOW)
    assert payer.available == -50
    with pytest.raises(InsufficientFunds):
        rules.move(payer, payee, *rules.post_deltas(1), NOW)


def test_no_floor_means_any_debit_within_range() -> None:
    payer = account("credit", min_balance=None)
    payee = account("credit")
    rules.move(payer, payee, *rules.post_deltas(MAX), NOW)
    assert payer.posted == -MAX


def test_holds_count_against_available() -> None:
    payer = account("credit", posted_credits=100)
    payee = account("credit")
    rules.move(payer, payee, *rules.hold_deltas(70), NOW)
    assert (payer.posted, payer.available, payer.pending_debits) == (100, 30, 70)
    assert (payee.posted, payee.available, payee.pending_credits) == (0, 0, 70)
    with pytest.raises(InsufficientFunds):
        rules.move(payer, payee, *rules.post_deltas(31), NOW)


def test_settle_posts_part_and_releases_the_rest() -> None:
    payer = account("credit", posted_credits=100)
    payee = account("credit")
    rules.move(payer, payee, *rules.hold_deltas(70), NOW)
    rules.move(payer, payee, *rules.settle_deltas(70, 40), NOW)
    assert (payer.posted, payer.available, payer.pending_debits) == (60, 60, 0)
    assert (payee.posted, payee.pending_credits) == (40, 0)


def test_release_returns_the_hold() -> None:
    payer = account("credit", posted_credits=100)
    payee = account("credit")
    rules.move(payer, payee, *rules.hold_deltas(70), NOW)
    rules.move(payer, payee, *rules.release_deltas(70), NOW)
    assert (payer.available, payer.pending_debits, payee.pending_credits) == (100, 0, 0)
    assert payer.version == 3


def test_a_move_that_raises_available_is_allowed_below_the_floor() -> None:
    # An account below its floor (say after a release of an old overdraft) may still receive.
    payer = account("credit", min_balance=None)
    low = account("credit", min_balance=0, posted_debits=10)
    rules.move(payer, low, *rules.post_deltas(5), NOW)
    assert low.available == -5


def test_releasing_more_than_held_is_an_invariant_violation_not_a_client_error() -> None:
    payer = account("credit", posted_credits=100, pending_debits=10)
    payee = account("credit", pending_credits=10)
    with pytest.raises(InvariantViolation):
        rules.move(payer, payee, *rules.release_deltas(11), NOW)
    assert payer.pending_debits == 10


# -- overflow (balances never wrap at 2**63-1) -----------------------------------------------


def test_credit_component_overflow_is_amount_overflow() -> None:
    payer = account("debit", min_balance=None)
    payee = account("credit", posted_credits=MAX)
    before = (snapshot(payer), snapshot(payee))
    with pytest.raises(AmountOverflow):
        rules.move(payer, payee, *rules.post_deltas(1), NOW)
    assert (snapshot(payer), snapshot(payee)) == before


def test_debit_component_overflow_is_amount_overflow() -> None:
    payer = account("debit", min_balance=None, posted_debits=MAX)
    payee = account("credit")
    with pytest.raises(AmountOverflow):
        rules.move(payer, payee, *rules.post_deltas(1), NOW)


def test_pending_component_overflow_is_amount_overflow() -> None:
    payer = account("debit", min_balance=None, pending_debits=MAX)
    payee = account("credit")
    with pytest.raises(AmountOverflow):
        rules.move(payer, payee, *rules.hold_deltas(1), NOW)


def test_available_below_the_signed_range_is_amount_overflow() -> None:
    # credit-normal, no floor: posted -MAX and then a hold would take available below -(2**63-1).
    payer = account("credit", min_balance=None, posted_debits=MAX)
    payee = account("credit")
    with pytest.raises(AmountOverflow):
        rules.move(payer, payee, *rules.hold_deltas(1), NOW)


def test_check_delta_accepts_the_largest_amount_exactly() -> None:
    a = account("credit")
    rules.check_delta(a, Delta(posted_credits=MAX))
    with pytest.raises(AmountOverflow):
        rules.check_delta(account("credit", posted_credits=1), Delta(posted_credits=MAX))
