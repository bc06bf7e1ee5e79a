"""Transfer decisions on top of the posting engine: single, batch, post, void, reverse, expire.

Every function answers in domain terms (transfer state, outcomes); the controllers choose the
HTTP status and body.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.context import Actor, WriteContext
from ledger.core.errors import Forbidden, TransferNotFound, ValidationFailed
from ledger.core.roles import PERMISSIONS
from ledger.core.schemas import check_metadata, check_text
from ledger.posting import engine
from ledger.posting.commands import TransferCommand
from ledger.posting.engine import Outcome, OutcomeKind
from ledger.posting.state import TransferState, VoidedId
from transfers import repository as repo
from transfers.schemas import BatchCreate, TransferCreate


@dataclass(frozen=True, slots=True)
class TransferResult:
    transfer: TransferState
    created: bool  # a new transfer (a create or a reversal); False: an existing one


def to_command(body: TransferCreate, field_prefix: str = "") -> TransferCommand:
    if body.timeout_seconds and not body.pending:
        raise ValidationFailed(
            "timeout_seconds applies only to pending transfers",
            errors=[{"field": f"{field_prefix}timeout_seconds", "message": "requires pending"}],
        )
    check_text(body.reference, f"{field_prefix}reference")
    imported_at = movement_fields(body, field_prefix)
    return TransferCommand(
        id=body.id,
        debit_account_id=body.debit_account_id,
        credit_account_id=body.credit_account_id,
        amount=body.amount,
        currency=body.currency,
        pending=body.pending,
        timeout_seconds=body.timeout_seconds or None,
        reference=body.reference,
        metadata=check_metadata(body.metadata, f"{field_prefix}metadata"),
        balancing=body.balancing,
        imported_at=imported_at,
    )


def movement_fields(body: TransferCreate, field_prefix: str) -> dt.datetime | None:
    """`imported_at` in UTC; an imported transfer is posted at once (never a hold)."""
    if body.imported_at is None:
        return None
    field = f"{field_prefix}imported_at"
    if body.pending:
        raise ValidationFailed(
            "an imported transfer is posted, never pending",
            errors=[{"field": field, "message": "not with pending"}],
        )
    try:
        return body.imported_at.astimezone(dt.UTC)
    except OverflowError as exc:
        raise ValidationFailed(
            "imported_at is out of range", errors=[{"field": field, "message": "out of range"}]
        ) from exc


def check_import_allowed(actor: Actor, commands: list[TransferCommand]) -> None:
    """Importing history is for admins: it writes the past."""
    if any(c.imported_at is not None for c in commands) and actor.role not in PERMISSIONS["import"]:
        raise Forbidden(f"role {actor.role} may not import transfers (imported_at)")


def batch_commands(body: BatchCreate) -> list[TransferCommand]:
    return [to_command(item, f"transfers.{i}.") for i, item in enumerate(body.transfers)]


def _single(outcome: Outcome) -> TransferResult:
    """One operation's outcome, its refusal raised."""
    if outcome.error is not None:
        raise outcome.error
    if outcome.transfer is None:
        raise TransferNotFound("no transfer")
    return TransferResult(outcome.transfer, created=outcome.kind is OutcomeKind.CREATED)


async def create_transfer(
    session: AsyncSession, command: TransferCommand, ctx: WriteContext
) -> TransferResult:
    [outcome] = await engine.create_transfers(session, [command], atomic=True, ctx=ctx)
    return _single(outcome)


async def create_batch(
    session: AsyncSession, commands: list[TransferCommand], atomic: bool, ctx: WriteContext
) -> list[Outcome]:
    """One outcome per command, in order (refusals included, not raised)."""
    return await engine.create_transfers(session, commands, atomic=atomic, ctx=ctx)


async def post_transfer(
    session: AsyncSession, transfer_id: uuid.UUID, amount: int | None, ctx: WriteContext
) -> TransferResult:
    return _single(await engine.post_transfer(session, transfer_id, amount, ctx))


async def void_transfer(
    session: AsyncSession, transfer_id: uuid.UUID, ctx: WriteContext
) -> TransferResult | VoidedId:
    """The voided transfer, or, for an id the ledger never saw, the TCC empty cancel."""
    outcome = await engine.void_transfer(session, transfer_id, ctx)
    if outcome is not None:
        return _single(outcome)
    voided_at = await repo.tombstone_time(session, transfer_id) or ctx.now
    return VoidedId(transfer_id, voided_at)


async def reverse_transfer(
    session: AsyncSession, transfer_id: uuid.UUID, amount: int | None, ctx: WriteContext
) -> TransferResult:
    return _single(await engine.reverse_transfer(session, transfer_id, amount, ctx))


async def get_transfer(session: AsyncSession, transfer_id: uuid.UUID) -> TransferState:
    found = await repo.get_transfer(session, transfer_id)
    if found is None:
        raise TransferNotFound(f"transfer {transfer_id} not found")
    return found


async def list_transfers(
    session: AsyncSession,
    *,
    account_id: uuid.UUID | None,
    state: str | None,
    after: uuid.UUID | None,
    limit: int,
    metadata: Sequence[tuple[str, str]] = (),
) -> list[TransferState]:
    return await repo.list_transfers(
        session, account_id=account_id, state=state, after=after, limit=limit, metadata=metadata
    )


async def expire_one(session: AsyncSession, transfer_id: uuid.UUID, ctx: WriteContext) -> bool:
    """Expire one pending transfer if it is still pending and past its timeout. True when this
    transaction released the hold (not on a no-op)."""
    outcome = await engine.expire_transfer(session, transfer_id, ctx)
    return outcome is not None and outcome.kind is OutcomeKind.CHANGED
