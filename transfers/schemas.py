"""Transfer request and response bodies."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec

from ledger.core import limits
from ledger.core.schemas import Amount, Metadata, Strict

Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9]{3,12}$")]
Reference = Annotated[str, msgspec.Meta(max_length=limits.REFERENCE_LENGTH_MAX)]
TimeoutSeconds = Annotated[int, msgspec.Meta(ge=0, le=limits.TIMEOUT_SECONDS_MAX)]
State = Literal["pending", "posted", "voided", "expired"]


class TransferCreate(Strict):
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: Amount
    id: uuid.UUID | None = None
    currency: Currency | None = None
    pending: bool = False
    timeout_seconds: TimeoutSeconds | None = None
    reference: Reference | None = None
    metadata: Metadata | None = None


class EmptyBody(Strict):
    """A void takes no fields; an empty object or no body at all."""


class AmountBody(Strict):
    amount: Amount | None = None


class BatchCreate(Strict):
    atomic: bool
    transfers: Annotated[
        list[TransferCreate], msgspec.Meta(min_length=1, max_length=limits.BATCH_TRANSFERS_MAX)
    ]


class TransferOut(msgspec.Struct):
    id: uuid.UUID
    debit_account_id: uuid.UUID | None
    credit_account_id: uuid.UUID | None
    amount: int
    currency: str | None
    state: State
    posted_amount: int
    reference: str | None
    metadata: Metadata
    timeout_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    reversal_of: uuid.UUID | None


class BatchItem(msgspec.Struct, omit_defaults=True):
    index: int
    status: int
    transfer: TransferOut | None = None
    error: dict[str, Any] | None = None


class BatchResult(msgspec.Struct):
    results: list[BatchItem]
