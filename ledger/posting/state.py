"""The ledger's domain state, as the posting engine decides on it: accounts and transfers.

Plain objects, no I/O. The repository reads them from the ledger tables and writes back what
changed (`changed`, `is_new`); the HTTP schemas and the event payloads are built from them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import msgspec


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


@dataclass(slots=True)
class AccountState:
    id: uuid.UUID
    code: str
    currency: str
    normal_balance: str
    min_balance: int | None
    status: str
    metadata: msgspec.Raw  # the client's JSON text as kept (check_metadata)
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


@dataclass(slots=True)
class TransferState:
    id: uuid.UUID
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: int
    currency: str
    state: str
    posted_amount: int
    reversed_amount: int
    reference: str | None
    metadata: msgspec.Raw  # the client's JSON text as kept (check_metadata)
    timeout_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    reversal_of: uuid.UUID | None
    # What the client asked, kept to tell a repeated create from a different one.
    created_pending: bool
    timeout_seconds: int | None
    # Money movement: when an imported transfer happened (its entries' posted_at), and what a
    # balancing transfer asked for at most (`amount` is what moved).
    imported_at: dt.datetime | None = None
    amount_ceiling: int | None = None
    is_new: bool = field(default=False, compare=False)
    changed: bool = field(default=False, compare=False)
    # Both accounts' balances right after this transfer's last change (ledger.posting.snapshots);
    # None for a transfer written before they were kept.
    balances_after: list[int] | None = None


@dataclass(frozen=True, slots=True)
class VoidedId:
    """A transfer id voided before the ledger saw it (TCC empty cancel): remembered so that a
    late create of it is refused."""

    id: uuid.UUID
    voided_at: dt.datetime
