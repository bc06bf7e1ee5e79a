"""Cross-currency exchange: two transfers, one per currency, through liquidity accounts.

The debit account pays `debit_amount` into the liquidity account of its currency; the liquidity
account of the other currency pays `credit_amount` to the credit account (TigerBeetle's recipe
of linked transfers). Both legs go through the posting engine's atomic path: one set of ordered
locks, one transaction, both or neither. The exchange row (its id, its legs and the rate) is
written in that transaction too, and a repeated request with the same `id` answers the stored
exchange (or 409 when its fields differ).
"""

from __future__ import annotations

import decimal
import uuid
from dataclasses import dataclass

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit.writer import AuditEntry, write_audit
from ledger.core.context import WriteContext
from ledger.core.errors import (
    AccountNotFound,
    ExchangeExistsWithDifferentFields,
    ExchangeSameCurrency,
    ExchangeViaInvalid,
    InvariantViolation,
    LedgerError,
    NotCommitted,
)
from ledger.core.ids import new_id
from ledger.core.schemas import check_metadata, check_text, same_metadata
from ledger.posting import engine
from ledger.posting import movement_repository as movement_repo
from ledger.posting.commands import TransferCommand
from ledger.posting.events import transfer_data
from ledger.posting.repository import load_transfers
from ledger.posting.state import TransferState
from transfers import repository as repo
from transfers.exchange_schemas import ExchangeCreate

# Enough digits for any quotient of two amounts up to 2**63 - 1 that terminates: such a
# quotient has at most 19 + 44 significant digits (5**63 has 44).
RATE_PRECISION_DIGITS = 64


@dataclass(frozen=True, slots=True)
class ExchangeCommand:
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    debit_amount: int
    credit_amount: int
    via: dict[str, uuid.UUID]
    id: uuid.UUID | None
    reference: str | None
    metadata: msgspec.Raw


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    id: uuid.UUID
    rate: str
    legs: tuple[TransferState, TransferState]
    created: bool


def to_exchange_command(body: ExchangeCreate) -> ExchangeCommand:
    check_text(body.reference, "reference")
    return ExchangeCommand(
        debit_account_id=body.debit_account_id,
        credit_account_id=body.credit_account_id,
        debit_amount=body.debit_amount,
        credit_amount=body.credit_amount,
        via=dict(body.via),
        id=body.id,
        reference=body.reference,
        metadata=check_metadata(body.metadata, "metadata"),
    )


def exchange_rate(debit_amount: int, credit_amount: int) -> str:
    """credit_amount / debit_amount as a plain decimal string (see RATE_PRECISION_DIGITS)."""
    context = decimal.Context(prec=RATE_PRECISION_DIGITS, rounding=decimal.ROUND_HALF_EVEN)
    rate = context.divide(decimal.Decimal(credit_amount), decimal.Decimal(debit_amount))
    return format(rate.normalize(context), "f")


def leg_commands(command: ExchangeCommand, currencies: tuple[str, str]) -> list[TransferCommand]:
    debit_currency, credit_currency = currencies
    if debit_currency == credit_currency:
        raise ExchangeSameCurrency(f"both accounts are in {debit_currency}")
    if set(command.via) != {debit_currency, credit_currency}:
        raise ExchangeViaInvalid(
            f"via must name exactly {debit_currency} and {credit_currency}, "
            f"got {', '.join(sorted(command.via))}"
        )
    return [
        TransferCommand(
            debit_account_id=command.debit_account_id,
            credit_account_id=command.via[debit_currency],
            amount=command.debit_amount,
            currency=debit_currency,
            reference=command.reference,
            metadata=command.metadata,
        ),
        TransferCommand(
            debit_account_id=command.via[credit_currency],
            credit_account_id=command.credit_account_id,
            amount=command.credit_amount,
            currency=credit_currency,
            reference=command.reference,
            metadata=command.metadata,
        ),
    ]


def _same_legs(legs: tuple[TransferState, TransferState], wanted: list[TransferCommand]) -> bool:
    return all(
        leg.debit_account_id == want.debit_account_id
        and leg.credit_account_id == want.credit_account_id
        and leg.amount == want.amount
        and leg.reference == want.reference
        and same_metadata(leg.metadata, want.metadata)
        for leg, want in zip(legs, wanted, strict=True)
    )


async def create_exchange(
    session: AsyncSession, command: ExchangeCommand, ctx: WriteContext
) -> ExchangeResult:
    # An account's currency never changes (a trigger refuses it), so reading it before the
    # locks decides nothing that a concurrent change could undo.
    found = await repo.account_currencies(
        session, [command.debit_account_id, command.credit_account_id]
    )
    for account_id in (command.debit_account_id, command.credit_account_id):
        if account_id not in found:
            raise AccountNotFound(f"account {account_id} not found")
    wanted = leg_commands(
        command, (found[command.debit_account_id], found[command.credit_account_id])
    )
    exchange_id = command.id or new_id()
    if command.id is not None:
        stored = await movement_repo.load_exchange(session, command.id)  # under its id lock
        if stored is not None:
            return await _existing(session, command.id, stored, wanted)
    outcomes = await engine.create_transfers(session, wanted, atomic=True, ctx=ctx)
    legs = tuple(o.transfer for o in outcomes if o.transfer is not None)
    if len(legs) != 2:
        raise _refusal([o.error for o in outcomes if o.error is not None])
    rate = exchange_rate(command.debit_amount, command.credit_amount)
    pair = (legs[0], legs[1])
    now = pair[0].updated_at
    await movement_repo.insert_exchange(session, exchange_id, (pair[0].id, pair[1].id), rate, now)
    await write_audit(
        session,
        [
            AuditEntry(
                action="exchange.create",
                object_type="exchange",
                object_id=str(exchange_id),
                data={
                    "request": {
                        "debit_amount": command.debit_amount,
                        "credit_amount": command.credit_amount,
                        "via": command.via,
                    },
                    "rate": rate,
                    "transfers": [transfer_data(leg) for leg in pair],
                },
            )
        ],
        ctx.at(now),
    )
    return ExchangeResult(exchange_id, rate, pair, created=True)


async def _existing(
    session: AsyncSession,
    exchange_id: uuid.UUID,
    stored: tuple[uuid.UUID, uuid.UUID, str],
    wanted: list[TransferCommand],
) -> ExchangeResult:
    debit_leg_id, credit_leg_id, rate = stored
    found = await load_transfers(session, [debit_leg_id, credit_leg_id])
    legs = (found[debit_leg_id], found[credit_leg_id])
    if not _same_legs(legs, wanted):
        raise ExchangeExistsWithDifferentFields(
            f"exchange {exchange_id} exists with different fields"
        )
    return ExchangeResult(exchange_id, rate, legs, created=False)


def _refusal(errors: list[LedgerError]) -> LedgerError:
    """The leg's own refusal (the other one only says `not_committed`)."""
    for error in errors:
        if not isinstance(error, NotCommitted):
            return error
    if errors:
        return errors[0]
    raise InvariantViolation("the posting engine refused an exchange without saying why")
