"""Bodies of `POST /v1/transfers/exchange`: what comes in and what goes out."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from ledger.core.schemas import Amount, Currency, Metadata, Strict, metadata_field
from transfers.schemas import Reference, TransferOut

# One liquidity account per currency: the debit account's and the credit account's.
Via = Annotated[dict[Currency, uuid.UUID], msgspec.Meta(min_length=2, max_length=2)]


class ExchangeCreate(Strict):
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    debit_amount: Amount
    credit_amount: Amount
    via: Via
    id: uuid.UUID | None = None
    reference: Reference | None = None
    metadata: Metadata = metadata_field()  # absent or null: {}


class ExchangeOut(msgspec.Struct):
    id: uuid.UUID
    # credit_amount / debit_amount: exact when the quotient terminates (it always does within
    # 64 significant digits for amounts of this range), else rounded half-even to 64 digits;
    # no exponent, no trailing zeros ("1.1", "0.0085", "250").
    rate: str
    # The two legs, posted in one transaction: the debit currency's, then the credit currency's.
    transfers: list[TransferOut]
