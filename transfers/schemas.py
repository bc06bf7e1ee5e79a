"""Transfer request and response bodies, and the response bodies built from domain state."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType

from ledger.core import limits
from ledger.core.errors import TransferNotFound
from ledger.core.schemas import EMPTY_METADATA, Amount, Currency, Metadata, Strict, metadata_field
from ledger.posting.engine import Outcome, OutcomeKind
from ledger.posting.snapshots import balances_after
from ledger.posting.state import TransferState, VoidedId

# No NUL (PostgreSQL text cannot hold one), said in the type so the OpenAPI document says it too.
Reference = Annotated[
    str, msgspec.Meta(max_length=limits.REFERENCE_LENGTH_MAX, pattern=r"^[^\x00]*$")
]
TimeoutSeconds = Annotated[int, msgspec.Meta(ge=0, le=limits.TIMEOUT_SECONDS_MAX)]
State = Literal["pending", "posted", "voided", "expired"]
ImportedAt = Annotated[dt.datetime, msgspec.Meta(tz=True)]


class TransferCreate(Strict):
    # Rules across fields, checked by transfers/service.py::to_command, stated in the OpenAPI
    # document (ledger/http/bodies.py::StrictSchemaPlugin): a timeout needs `pending: true`;
    # an imported transfer is posted at once, never pending.
    openapi_if_then: ClassVar[list[tuple[Schema, Schema]]] = [
        (
            Schema(
                required=["timeout_seconds"],
                properties={"timeout_seconds": Schema(type=OpenAPIType.INTEGER, minimum=1)},
            ),
            Schema(required=["pending"], properties={"pending": Schema(const=True)}),
        ),
        (
            Schema(
                required=["imported_at"],
                properties={"imported_at": Schema(type=OpenAPIType.STRING)},
            ),
            Schema(properties={"pending": Schema(const=False)}),
        ),
    ]

    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: Amount
    id: uuid.UUID | None = None
    currency: Currency | None = None
    pending: bool = False
    timeout_seconds: TimeoutSeconds | None = None
    reference: Reference | None = None
    metadata: Metadata = metadata_field()  # absent or null: {}
    # Money movement: `amount` as a ceiling; an earlier instant the transfer happened (admin).
    balancing: bool = False
    imported_at: ImportedAt | None = None


class EmptyBody(Strict):
    """A void takes no fields; an empty object or no body at all."""


class AmountBody(Strict):
    amount: Amount | None = None


class BatchCreate(Strict):
    atomic: bool
    transfers: Annotated[
        list[TransferCreate], msgspec.Meta(min_length=1, max_length=limits.BATCH_TRANSFERS_MAX)
    ]


class AccountBalances(msgspec.Struct):
    """One account's balances object (as on the account) right after a transfer's change."""

    posted: int
    available: int
    posted_debits: int
    posted_credits: int
    pending_debits: int
    pending_credits: int


class TransferOut(msgspec.Struct, omit_defaults=True):  # omitted: imported_at when null
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
    # Both accounts' balances right after the transfer's last change, from the locked state it
    # was decided on; empty for an empty cancel and for transfers written before they were kept.
    balances_after: dict[uuid.UUID, AccountBalances]
    imported_at: dt.datetime | None = None  # set only on an imported transfer


class BatchItem(msgspec.Struct, omit_defaults=True):
    index: int
    status: int
    transfer: TransferOut | None = None
    error: dict[str, Any] | None = None


class BatchResult(msgspec.Struct):
    results: list[BatchItem]


class TransferPage(msgspec.Struct):
    data: list[TransferOut]
    next_cursor: str | None


def transfer_out(t: TransferState) -> TransferOut:
    return TransferOut(
        id=t.id,
        debit_account_id=t.debit_account_id,
        credit_account_id=t.credit_account_id,
        amount=t.amount,
        currency=t.currency,
        state=t.state,  # type: ignore[arg-type]
        posted_amount=t.posted_amount,
        reference=t.reference,
        metadata=t.metadata,
        timeout_at=t.timeout_at,
        created_at=t.created_at,
        updated_at=t.updated_at,
        reversal_of=t.reversal_of,
        imported_at=t.imported_at,
        balances_after={
            account_id: AccountBalances(**values)
            for account_id, values in balances_after(t).items()
        },
    )


def empty_cancel_out(voided: VoidedId) -> TransferOut:
    """TCC empty cancel: a void of an id the ledger never saw, remembered so a late create is
    refused. No accounts, no amount."""
    return TransferOut(
        id=voided.id,
        debit_account_id=None,
        credit_account_id=None,
        amount=0,
        currency=None,
        state="voided",
        posted_amount=0,
        reference=None,
        metadata=EMPTY_METADATA,
        timeout_at=None,
        created_at=voided.voided_at,
        updated_at=voided.voided_at,
        reversal_of=None,
        balances_after={},
    )


def outcome_status(outcome: Outcome) -> int:
    """The HTTP status of one transfer outcome: 201 a new transfer, 200 an existing one, or the
    refusal's own status (every LedgerError maps to one)."""
    if outcome.error is not None:
        return outcome.error.status
    return 201 if outcome.kind is OutcomeKind.CREATED else 200


def batch_item(index: int, outcome: Outcome) -> BatchItem:
    status = outcome_status(outcome)
    if outcome.error is not None:
        return BatchItem(index=index, status=status, error=outcome.error.problem())
    if outcome.transfer is None:
        raise TransferNotFound("no transfer")
    return BatchItem(index=index, status=status, transfer=transfer_out(outcome.transfer))


def batch_result(outcomes: list[Outcome]) -> BatchResult:
    return BatchResult(results=[batch_item(i, o) for i, o in enumerate(outcomes)])
