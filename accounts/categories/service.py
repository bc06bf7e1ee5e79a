"""Category decisions: create (idempotent by id), move in the tree, metadata, membership; reads.

Every change bumps the category's version by one and writes its event and audit record in the
same transaction. Refusals: a cycle (`category_cycle`), a parent or an account in another
currency (`currency_mismatch`); the database's triggers refuse the same, behind this code."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from accounts import repository as accounts_repo
from accounts.categories import repository as repo
from accounts.categories.repository import Rollup
from accounts.categories.schemas import CategoryCreate, CategoryPatch
from ledger.audit.writer import AuditEntry, write_audit
from ledger.core import limits
from ledger.core.context import WriteContext
from ledger.core.errors import (
    AccountCategoriesLimitReached,
    AccountNotFound,
    CategoryAccountsLimitReached,
    CategoryChildrenLimitReached,
    CategoryCodeExists,
    CategoryCycle,
    CategoryExistsWithDifferentFields,
    CategoryMembershipNotFound,
    CategoryNotFound,
    CategoryTooDeep,
    CurrencyMismatch,
)
from ledger.core.ids import new_id
from ledger.core.schemas import check_metadata, same_metadata
from ledger.posting import categories as events
from ledger.posting.categories import CategoryState
from outbox.writer import PendingEvent, write_events


@dataclass(frozen=True, slots=True)
class CategoryResult:
    category: CategoryState
    created: bool  # False: this create repeats one already done (same id, same fields)


async def _record(
    session: AsyncSession,
    event: PendingEvent,
    action: str,
    category: CategoryState,
    data: dict[str, Any],
    ctx: WriteContext,
) -> None:
    """The tail of every category write: its event, then its audit record."""
    await write_events(session, [event], ctx)
    audit = AuditEntry(action=action, object_type="category", object_id=str(category.id), data=data)
    await write_audit(session, [audit], ctx)


async def get_category(session: AsyncSession, category_id: uuid.UUID) -> CategoryState:
    category = await repo.get_category(session, category_id)
    if category is None:
        raise CategoryNotFound(f"category {category_id} not found")
    return category


async def _parent(session: AsyncSession, parent_id: uuid.UUID, currency: str) -> CategoryState:
    parent = await repo.get_category(session, parent_id)
    if parent is None:
        raise CategoryNotFound(f"parent category {parent_id} not found")
    if parent.currency != currency:
        raise CurrencyMismatch(
            f"parent category {parent_id} is in {parent.currency}, not {currency}"
        )
    return parent


def _same(existing: CategoryState, request: CategoryCreate, metadata: msgspec.Raw) -> bool:
    return (
        existing.code == request.code
        and existing.currency == request.currency
        and existing.normal_balance == request.normal_balance
        and existing.parent_id == request.parent_id
        and same_metadata(existing.metadata, metadata)
    )


async def _existing(
    session: AsyncSession, request: CategoryCreate, metadata: msgspec.Raw
) -> CategoryState | None:
    found = await repo.find_by_id_or_code(session, request.id, request.code)
    for existing in found:
        if existing.id == request.id:
            if _same(existing, request, metadata):
                return existing
            raise CategoryExistsWithDifferentFields(
                f"category {request.id} exists with different fields"
            )
    if found:
        raise CategoryCodeExists(f"category code {request.code!r} is taken")
    return None


def _request_data(request: CategoryCreate | CategoryPatch, metadata: msgspec.Raw) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(request, builtin_types=(msgspec.Raw,))
    if request.metadata:
        data["metadata"] = metadata
    elif isinstance(request, CategoryCreate):
        data["metadata"] = None
    else:
        del data["metadata"]
    return data


async def create_category(
    session: AsyncSession, request: CategoryCreate, ctx: WriteContext
) -> CategoryResult:
    metadata = check_metadata(request.metadata)
    existing = await _existing(session, request, metadata)
    if existing is not None:
        return CategoryResult(existing, created=False)
    if request.parent_id is not None:
        await _parent(session, request.parent_id, request.currency)
        await repo.lock_parent(session, request.parent_id)
        await _check_room_under(session, request.parent_id, height=1)
    category = CategoryState(
        id=request.id or new_id(),
        code=request.code,
        currency=request.currency,
        normal_balance=request.normal_balance,
        parent_id=request.parent_id,
        metadata=metadata,
        version=1,
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    if not await repo.insert_category(session, category):
        existing = await _existing(session, request, metadata)
        if existing is not None:
            return CategoryResult(existing, created=False)
        raise CategoryCodeExists(f"category code {request.code!r} is taken")
    event = events.category_created(category)
    data = {"request": _request_data(request, metadata), "result": event.data}
    await _record(session, event, "category.create", category, data, ctx)
    return CategoryResult(category, created=True)


async def patch_category(
    session: AsyncSession, category_id: uuid.UUID, patch: CategoryPatch, ctx: WriteContext
) -> CategoryState:
    moving = patch.parent_id is not msgspec.UNSET
    if moving:
        await repo.lock_tree(session)
    category = await repo.get_category(session, category_id, for_update=True)
    if category is None:
        raise CategoryNotFound(f"category {category_id} not found")
    before: dict[str, Any] = {"parent_id": category.parent_id, "metadata": category.metadata}
    changes: dict[str, Any] = {}
    if moving and patch.parent_id != category.parent_id:
        new_parent = patch.parent_id if isinstance(patch.parent_id, uuid.UUID) else None
        if new_parent is not None:
            await _check_move(session, category, new_parent)
        category.parent_id = new_parent
        changes["parent_id"] = new_parent
    if patch.metadata:  # sent (null included: it clears)
        category.metadata = check_metadata(patch.metadata)
        changes["metadata"] = category.metadata
    if not changes:
        return category
    category.version += 1
    category.updated_at = ctx.now
    await repo.update_category(session, category)
    data = {
        "request": _request_data(patch, category.metadata),
        "before": {k: before[k] for k in changes},
        "after": changes,
    }
    await _record(
        session, events.category_updated(category), "category.update", category, data, ctx
    )
    return category


async def _check_move(session: AsyncSession, category: CategoryState, parent_id: uuid.UUID) -> None:
    """The new parent exists, shares the currency, and is not the category or below it."""
    if parent_id == category.id:
        raise CategoryCycle(f"category {category.id} cannot be its own parent")
    await _parent(session, parent_id, category.currency)
    if await repo.is_descendant(session, category.id, parent_id):
        raise CategoryCycle(
            f"category {parent_id} is below category {category.id}: the move would make a cycle"
        )
    await repo.lock_parent(session, parent_id)
    await _check_room_under(session, parent_id, height=await repo.height_of(session, category.id))


async def _check_room_under(session: AsyncSession, parent_id: uuid.UUID, height: int) -> None:
    """A subtree `height` levels high fits under `parent_id`: the tree stays within
    CATEGORY_LEVELS_MAX levels and the parent within CATEGORY_CHILDREN_MAX children. Called
    with the parent locked (`lock_parent`): what it counts holds until the commit."""
    levels = await repo.level_of(session, parent_id) + height
    if levels > limits.CATEGORY_LEVELS_MAX:
        raise CategoryTooDeep(
            f"under category {parent_id} the tree would be {levels} levels deep, "
            f"more than {limits.CATEGORY_LEVELS_MAX}"
        )
    children = limits.CATEGORY_CHILDREN_MAX
    if await repo.count_children(session, parent_id, children) >= children:
        raise CategoryChildrenLimitReached(
            f"category {parent_id} has {children} child categories already"
        )


async def change_membership(
    session: AsyncSession,
    category_id: uuid.UUID,
    account_id: uuid.UUID,
    *,
    add: bool,
    ctx: WriteContext,
) -> tuple[CategoryState, bool]:
    """Add (PUT) or remove (DELETE) an account. Returns the category and whether anything
    changed: a PUT of a member already in is no change, a DELETE of a non-member is a 404."""
    category = await repo.get_category(session, category_id, for_update=True)
    if category is None:
        raise CategoryNotFound(f"category {category_id} not found")
    if add:
        account = await accounts_repo.get_account(session, account_id)
        if account is None:
            raise AccountNotFound(f"account {account_id} not found")
        if account.currency != category.currency:
            raise CurrencyMismatch(
                f"account {account_id} is in {account.currency}, "
                f"category {category_id} in {category.currency}"
            )
        await _check_room_for_member(session, category_id, account_id)
        changed = await repo.add_member(session, category_id, account_id, ctx.now)
    else:
        changed = await repo.remove_member(session, category_id, account_id)
        if not changed:
            raise CategoryMembershipNotFound(
                f"account {account_id} is not in category {category_id}"
            )
    if not changed:
        return category, False
    category.version += 1
    category.updated_at = ctx.now
    await repo.update_category(session, category)
    event = events.membership_changed(category, account_id, added=add)
    action = "category.add_account" if add else "category.remove_account"
    await _record(session, event, action, category, {"result": event.data}, ctx)
    return category, True


async def _check_room_for_member(
    session: AsyncSession, category_id: uuid.UUID, account_id: uuid.UUID
) -> None:
    """A new member fits: the category (locked by the caller) holds fewer than
    CATEGORY_ACCOUNTS_MAX accounts, and the account (its memberships' lock taken here) is in
    fewer than ACCOUNT_CATEGORIES_MAX categories. A member already in is no new member."""
    await repo.lock_account_memberships(session, account_id)
    if await repo.is_member(session, category_id, account_id):
        return
    members = limits.CATEGORY_ACCOUNTS_MAX
    if await repo.count_members(session, category_id, members) >= members:
        raise CategoryAccountsLimitReached(f"category {category_id} holds {members} accounts")
    memberships = limits.ACCOUNT_CATEGORIES_MAX
    if await repo.count_memberships(session, account_id, memberships) >= memberships:
        raise AccountCategoriesLimitReached(
            f"account {account_id} is in {memberships} categories already"
        )


async def list_categories(
    session: AsyncSession, *, parent_id: uuid.UUID | None, after: uuid.UUID | None, limit: int
) -> list[CategoryState]:
    return await repo.list_categories(session, parent_id=parent_id, after=after, limit=limit)


async def balance(
    session: AsyncSession, category_id: uuid.UUID, as_of: dt.datetime | None
) -> tuple[CategoryState, Rollup]:
    category = await get_category(session, category_id)
    return category, await repo.rollup(session, category, as_of)
