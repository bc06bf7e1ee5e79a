"""Transfer decisions on top of the posting kernel: single, batch, post, void, reverse, expire."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.context import WriteContext
from ledger.core.errors import TransferNotFound, ValidationFailed
from ledger.core.schemas import check_metadata, check_text
from ledger.posting import engine
from ledger.posting.engine import Outcome, TransferCommand, transfer_out
from transfers import repository as repo
from transfers.schemas import BatchCreate, BatchItem, BatchResult, TransferCreate, TransferOut


def to_command(body: TransferCreate, field_prefix: str = "") -> TransferCommand:
    if body.timeout_seconds and not body.pending:
        raise ValidationFailed(
            "timeout_seconds applies only to pending transfers",
            errors=[{"field": f"{field_prefix}timeout_seconds", "message": "requires pending"}],
        )
    check_text(body.reference, f"{field_prefix}reference")
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
    )


def _single(outcome: Outcome) -> tuple[int, TransferOut]:
    if outcome.error is not None:
        raise outcome.error
    if outcome.transfer is None:
        raise TransferNotFound("no transfer")
    return outcome.status, transfer_out(outcome.transfer)


async def create_transfer(
    session: AsyncSession, command: TransferCommand, ctx: WriteContext
) -> tuple[int, TransferOut]:
    [outcome] = await engine.create_transfers(session, [command], atomic=True, ctx=ctx)
    return _single(outcome)


async def create_batch(
    session: AsyncSession, commands: list[TransferCommand], atomic: bool, ctx: WriteContext
) -> tuple[int, BatchResult]:
    outcomes = await engine.create_transfers(session, commands, atomic=atomic, ctx=ctx)
    return 200, BatchResult(results=[_item(i, o) for i, o in enumerate(outcomes)])


def _item(index: int, outcome: Outcome) -> BatchItem:
    if outcome.error is not None:
        return BatchItem(index=index, status=outcome.status, error=outcome.error.problem())
    if outcome.transfer is None:
        raise TransferNotFound("no transfer")
    return BatchItem(index=index, status=outcome.status, transfer=transfer_out(outcome.transfer))


def batch_commands(body: BatchCreate) -> list[TransferCommand]:
    return [to_command(item, f"transfers.{i}.") for i, item in enumerate(body.transfers)]


async def post_transfer(
    session: AsyncSession, transfer_id: uuid.UUID, amount: int | None, ctx: WriteContext
) -> tuple[int, TransferOut]:
    return _single(await engine.post_pending(session, transfer_id, amount, ctx))


async def void_transfer(
    session: AsyncSession, transfer_id: uuid.UUID, ctx: WriteContext
) -> tuple[int, TransferOut]:
    outcome = await engine.void_pending(session, transfer_id, ctx)
    if outcome is not None:
        return _single(outcome)
    voided_at = await repo.tombstone_time(session, transfer_id) or ctx.now
    return 200, empty_cancel(transfer_id, voided_at)


def empty_cancel(transfer_id: uuid.UUID, at: dt.datetime) -> TransferOut:
    """TCC empty cancel: the id is remembered so a late create is refused."""
    return TransferOut(
        id=transfer_id,
        debit_account_id=None,
        credit_account_id=None,
        amount=0,
        currency=None,
        state="voided",
        posted_amount=0,
        reference=None,
        metadata={},
        timeout_at=None,
        created_at=at,
        updated_at=at,
        reversal_of=None,
    )


async def reverse_transfer(
    session: AsyncSession, transfer_id: uuid.UUID, amount: int | None, ctx: WriteContext
) -> tuple[int, TransferOut]:
    return _single(await engine.reverse_transfer(session, transfer_id, amount, ctx))


async def get_transfer(session: AsyncSession, transfer_id: uuid.UUID) -> TransferOut:
    found = await repo.get_transfer(session, transfer_id)
    if found is None:
        raise TransferNotFound(f"transfer {transfer_id} not found")
    return transfer_out(found)


async def expire_one(session: AsyncSession, transfer_id: uuid.UUID, ctx: WriteContext) -> bool:
    """Expire one pending transfer if it is still pending and past its timeout."""
    outcome = await engine.void_pending(session, transfer_id, ctx, expire=True)
    # `changed` is set only when this transaction released the hold (not on a no-op).
    return outcome is not None and outcome.transfer is not None and outcome.transfer.changed
