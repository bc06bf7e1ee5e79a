"""Account decisions: create (idempotent by id), change status, floor and metadata."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from accounts import repository as repo
from accounts.schemas import AccountCreate, AccountOut, AccountPatch, account_out
from ledger.audit.writer import AuditEntry, write_audit
from ledger.core.context import WriteContext
from ledger.core.errors import (
    AccountClosed,
    AccountCodeExists,
    AccountExistsWithDifferentFields,
    AccountNotEmpty,
    AccountNotFound,
    MinBalanceViolated,
    PreconditionFailed,
    ValidationFailed,
)
from ledger.core.ids import new_id
from ledger.core.schemas import check_metadata
from ledger.posting.rules import AccountState, available_balance
from outbox.writer import PendingEvent, write_events

STATUS_MOVES = {
    "active": {"active", "frozen", "closed"},
    "frozen": {"active", "frozen", "closed"},
    "closed": {"closed"},
}


def _same_as_existing(
    existing: AccountState, request: AccountCreate, min_balance: int | None
) -> bool:
    return (
        existing.code == request.code
        and existing.currency == request.currency
        and existing.normal_balance == request.normal_balance
        and existing.min_balance == min_balance
        and existing.metadata == (request.metadata or {})
    )


async def create_account(
    session: AsyncSession, request: AccountCreate, ctx: WriteContext
) -> tuple[int, AccountOut]:
    metadata = check_metadata(request.metadata)
    min_balance = 0 if request.min_balance is msgspec.UNSET else request.min_balance
    existing = await _existing(session, request, min_balance)
    if existing is not None:
        return 200, existing
    if min_balance is not None and min_balance > 0:
        # A new account holds nothing: a positive floor would be broken from its first moment
        # (and the database's floor check refuses such a row).
        raise MinBalanceViolated(
            f"a new account's available balance is 0, below the requested min_balance {min_balance}"
        )
    account = AccountState(
        id=request.id or new_id(),
        code=request.code,
        currency=request.currency,
        normal_balance=request.normal_balance,
        min_balance=min_balance,
        status="active",
        metadata=metadata,
        version=1,
        posted_debits=0,
        posted_credits=0,
        pending_debits=0,
        pending_credits=0,
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    if not await repo.insert_account(session, account):
        # A concurrent create of the same id or code committed between our check and insert:
        # answer as if it had committed before we looked.
        existing = await _existing(session, request, min_balance)
        if existing is not None:
            return 200, existing
        raise AccountCodeExists(f"account code {request.code!r} is taken")
    out = account_out(account)
    await write_events(
        session,
        [PendingEvent("ledger.account.created", account.id, out, sequence=account.version)],
        ctx,
    )
    await write_audit(
        session,
        [
            AuditEntry(
                action="account.create",
                object_type="account",
                object_id=str(account.id),
                data={"request": msgspec.to_builtins(request), "result": out},
            )
        ],
        ctx,
    )
    return 201, out


async def _existing(
    session: AsyncSession, request: AccountCreate, min_balance: int | None
) -> AccountOut | None:
    """The account this create repeats (same id, same fields), or None when the id and the code
    are free; a named conflict when either is taken otherwise."""
    found = await repo.find_by_id_or_code(session, request.id, request.code)
    for existing in found:
        if existing.id == request.id:
            if _same_as_existing(existing, request, min_balance):
                return account_out(existing)
            raise AccountExistsWithDifferentFields(
                f"account {request.id} exists with different fields"
            )
    if found:
        raise AccountCodeExists(f"account code {request.code!r} is taken")
    return None


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> AccountState:
    account = await repo.get_account(session, account_id)
    if account is None:
        raise AccountNotFound(f"account {account_id} not found")
    return account


async def patch_account(
    session: AsyncSession,
    account_id: uuid.UUID,
    patch: AccountPatch,
    expected_version: int,
    ctx: WriteContext,
) -> AccountOut:
    account = await repo.get_account(session, account_id, for_update=True)
    if account is None:
        raise AccountNotFound(f"account {account_id} not found")
    if account.version != expected_version:
        raise PreconditionFailed(
            f"account {account_id} is at version {account.version}, not {expected_version}"
        )
    before = account_out(account)
    changes: dict[str, Any] = {}
    if account.status == "closed":
        raise AccountClosed(f"account {account_id} is closed")
    if patch.metadata is not msgspec.UNSET:
        account.metadata = check_metadata(patch.metadata)
        changes["metadata"] = account.metadata
    if patch.min_balance is not msgspec.UNSET:
        _check_floor(account, patch.min_balance)
        account.min_balance = patch.min_balance
        changes["min_balance"] = patch.min_balance
    if patch.status is not msgspec.UNSET and patch.status != account.status:
        _check_status_move(account, patch.status)
        account.status = patch.status
        changes["status"] = patch.status
    if not changes:
        return before
    account.version += 1
    account.updated_at = ctx.now
    await repo.update_account(session, account)
    out = account_out(account)
    await write_events(
        session,
        [PendingEvent("ledger.account.updated", account.id, out, sequence=account.version)],
        ctx,
    )
    await write_audit(
        session,
        [
            AuditEntry(
                action="account.update",
                object_type="account",
                object_id=str(account.id),
                data={
                    "request": msgspec.to_builtins(patch),
                    "before": {k: msgspec.to_builtins(getattr(before, k)) for k in changes},
                    "after": changes,
                },
            )
        ],
        ctx,
    )
    return out


def _check_floor(account: AccountState, min_balance: int | None) -> None:
    if min_balance is None:
        return
    available = available_balance(
        account.normal_balance,
        account.posted_debits,
        account.posted_credits,
        account.pending_debits,
        account.pending_credits,
    )
    if available < min_balance:
        raise MinBalanceViolated(
            f"available balance {available} is below the requested min_balance {min_balance}"
        )


def _check_status_move(account: AccountState, status: str) -> None:
    if status not in STATUS_MOVES[account.status]:
        raise ValidationFailed(
            f"status cannot move from {account.status} to {status}",
            errors=[{"field": "status", "message": "invalid transition"}],
        )
    if status == "closed" and (
        account.posted_debits != account.posted_credits
        or account.pending_debits
        or account.pending_credits
    ):
        raise AccountNotEmpty(
            f"account {account.id} has posted balance {account.posted} and holds "
            f"{account.pending_debits + account.pending_credits}"
        )


def utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValidationFailed(
            "timestamps must carry a UTC offset (RFC 3339)",
            errors=[{"field": "timestamp", "message": "no offset"}],
        )
    try:
        return value.astimezone(dt.UTC)
    except OverflowError as exc:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValidationFailed(
            "timestamp is out of range",
            errors=[{"field": "timestamp", "message": "out of range"}],
        ) from exc
