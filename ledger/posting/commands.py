"""What a client asks the posting engine to do: the commands, independent of any transport."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ledger.core.schemas import EMPTY_METADATA


@dataclass(frozen=True, slots=True)
class TransferCommand:
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: int
    id: uuid.UUID | None = None
    currency: str | None = None
    pending: bool = False
    timeout_seconds: int | None = None
    reference: str | None = None
    # The client's JSON text as kept (ledger.core.schemas.check_metadata), never re-encoded.
    metadata: msgspec.Raw = field(default_factory=lambda: EMPTY_METADATA)
    # Money movement: `amount` is a ceiling (move what the accounts allow, up to it); a
    # transfer that happened at this earlier instant (admin only, checked above the engine).
    balancing: bool = False
    imported_at: dt.datetime | None = None


def command_data(command: TransferCommand) -> dict[str, Any]:
    """The command as its audit record keeps it (the `request` of `transfer.create`)."""
    return {
        "id": command.id,
        "debit_account_id": command.debit_account_id,
        "credit_account_id": command.credit_account_id,
        "amount": command.amount,
        "currency": command.currency,
        "pending": command.pending,
        "timeout_seconds": command.timeout_seconds,
        "reference": command.reference,
        "metadata": command.metadata,
        **movement_data(command),
    }


def movement_data(command: TransferCommand) -> dict[str, Any]:
    """What a money-movement command adds to its audit request; nothing for a plain one, so
    existing records keep their shape."""
    data: dict[str, Any] = {}
    if command.balancing:
        data["balancing"] = True
    if command.imported_at is not None:
        data["imported_at"] = command.imported_at
    return data
