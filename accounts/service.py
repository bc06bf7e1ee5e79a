"""Account decisions: create (idempotent by id), change status, floor and metadata; reads.

Every function answers in domain terms (account state); the controllers choose the HTTP status
and body. Event payloads come from ledger.posting.events, never from the HTTP schemas."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from accounts import repository as repo
from accounts.schemas import AccountCreate, AccountPatch
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
from ledger.core.schemas import check_metadata, same_metadata
from ledger.posting import events
from ledger.posting.state import AccountState, available_balance
from outbox.writer import PendingEvent, write_events

STATUS_MOVES = {
    "active": {"active", "frozen", "closed"},
    "frozen": {"active", "frozen", "closed"},
    "closed": {"closed"},
}


def _same_as_existing(
    existing: AccountState, request: AccountCreate, min_balance: int | None, metadata: msgspec.Raw
) -> bool:
    """Metadata is the same with the same members in any order (`same_metadata`), and differs
    when a number is written otherwise."""
    return (
        existing.code == request.code
        and existing.currency == request.currency
        and existing.normal_balance == request.normal_balance
        and existing.min_balance == min_balance
        and same_metadata(existing.metadata, metadata)
    )


def _request_data(request: AccountCreate | AccountPatch, metadata: msgspec.Raw) -> dict[str, Any]:
    """The request as its audit record keeps it: the fields sent, metadata as kept."""
    data: dict[str, Any] = msgspec.to_builtins(request, builtin_types=(msgspec.Raw,))
    if request.metadata:  # sent: its text as kept; `null` is kept as {}
        data["metadata"] = metadata
    elif isinstance(request, AccountCreate):
        data["metadata"] = None  # not sent (never the empty Raw: it is not JSON)
    else:
        del data["metadata"]  # a patch names only what it changes
    return data


@dataclass(frozen=True, slots=True)
class AccountResult:
    account: AccountState
    created: bool  # False: this create repeats one already done (same id, same fields)


async def create_account(
    session: AsyncSession, request: AccountCreate, ctx: WriteContext
) -> AccountResult:
    metadata = check_metadata(request.metadata)
    min_balance = 0 if request.min_balance is msgspec.UNSET else request.min_balance
    existing = await _existing(session, request, min_balance, metadata)
    if existing is not None:
        return AccountResult(existing, created=False)
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
        existing = await _existing(session, request, min_balance, metadata)
        if existing is not None:
            return AccountResult(existing, created=False)
        raise AccountCodeExists(f"account code {request.code!r} is taken")
    event = events.account_created(account)
    await _record(
        session,
        event,
        _audit(
            "account.create",
            account,
            {"request": _request_data(request, metadata), "result": event.data},
        ),
        ctx,
    )
    return AccountResult(account, created=True)


async def _existing(
    session: AsyncSession, request: AccountCreate, min_balance: int | None, metadata: msgspec.Raw
) -> AccountState | None:
    """The account this create repeats (same id, same fields), or None when the id and the code
    are free; a named conflict when either is taken otherwise."""
    found = await repo.find_by_id_or_code(session, request.id, request.code)
    for existing in found:
        if existing.id == request.id:
            if _same_as_existing(existing, request, min_balance, metadata):
                return existing
            raise AccountExistsWithDifferentFields(
                f"account {request.id} exists with different fields"
            )
    if found:
        raise AccountCodeExists(f"account code {request.code!r} is taken")
    return None


def _audit(action: str, account: AccountState, data: dict[str, Any]) -> AuditEntry:
    return AuditEntry(action=action, object_type="account", object_id=str(account.id), data=data)


async def _record(
    session: AsyncSession, event: PendingEvent, audit: AuditEntry, ctx: WriteContext
) -> None:
    """The tail of every account write: its event, then its audit record."""
    await write_events(session, [event], ctx)
    await write_audit(session, [audit], ctx)


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> AccountState:
    account = await repo.get_account(session, account_id)
    if account is None:
        raise AccountNotFound(f"account {account_id} not found")
    return account


async def list_accounts(
    session: AsyncSession,
    *,
    code: str | None,
    currency: str | None,
    status: str | None,
    after: uuid.UUID | None,
    limit: int,
    metadata: Sequence[tuple[str, str]] = (),
) -> list[AccountState]:
    return await repo.list_accounts(
        session,
        code=code,
        currency=currency,
        status=status,
        after=after,
        limit=limit,
        metadata=metadata,
    )


async def list_entries(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    start: dt.datetime | None,
    end: dt.datetime | None,
    after_sequence: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The account's entries in sequence order (posted_at in [start, end)); 404 when the
    account does not exist."""
    await get_account(session, account_id)
    return await repo.list_entries(
        session, account_id, start=start, end=end, after_sequence=after_sequence, limit=limit
    )


async def balance_as_of(
    session: AsyncSession, account_id: uuid.UUID, as_of: dt.datetime
) -> tuple[int, int]:
    """(posted balance, sequence) of the account after its last entry at or before `as_of`;
    (0, 0) before its first. 404 when the account does not exist."""
    await get_account(session, account_id)
    found = await repo.balance_as_of(session, account_id, as_of)
    return found if found is not None else (0, 0)


async def patch_account(
    session: AsyncSession,
    account_id: uuid.UUID,
    patch: AccountPatch,
    expected_version: int,
    ctx: WriteContext,
) -> AccountState:
    # The body's own rule first: malformed metadata is a 422 whatever the account's version.
    metadata = check_metadata(patch.metadata) if patch.metadata else None
    account = await repo.get_account(session, account_id, for_update=True)
    if account is None:
        raise AccountNotFound(f"account {account_id} not found")
    if account.version != expected_version:
        raise PreconditionFailed(
            f"account {account_id} is at version {account.version}, not {expected_version}"
        )
    # What the audit record's `before` may name (the values, kept before they are replaced).
    before: dict[str, Any] = {
        "metadata": account.metadata,
        "min_balance": account.min_balance,
        "status": account.status,
    }
    changes: dict[str, Any] = {}
    if account.status == "closed":
        raise AccountClosed(f"account {account_id} is closed")
    if metadata is not None:  # sent (null included: it clears)
        account.metadata = metadata
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
        return account
    account.version += 1
    account.updated_at = ctx.now
    await repo.update_account(session, account)
    audit_data = {
        "request": _request_data(patch, account.metadata),
        "before": {k: before[k] for k in changes},
        "after": changes,
    }
    await _record(
        session, events.account_updated(account), _audit("account.update", account, audit_data), ctx
    )
    return account


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
