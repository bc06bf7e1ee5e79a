"""All SQL about categories: the tree, membership rows, and balances summed at read time.

A balance is one statement (a recursive CTE over the tree, its members, their balances), so it
reads every account at one instant: the statement's snapshot, whatever commits meanwhile.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.categories.models import Category, CategoryAccount
from ledger.core import limits
from ledger.core.locks import SINGLETON_KEY, ClientIdKind, LockClass, client_id_locks_sql
from ledger.posting.categories import CategoryState

categories_t = cast(sa.Table, Category.__table__)
members_t = cast(sa.Table, CategoryAccount.__table__)

CATEGORY_COLUMNS = [
    categories_t.c.metadata_text.label("metadata") if c.name == "metadata_text" else c
    for c in categories_t.c
    if c.name != "metadata"
]


def _category(row: sa.Row[Any]) -> CategoryState:
    values = dict(row._mapping)
    values["metadata"] = msgspec.Raw(values["metadata"])
    return CategoryState(**values)


def _metadata_values(metadata: msgspec.Raw) -> dict[str, Any]:
    text = bytes(metadata).decode()
    return {"metadata_text": text, "metadata": sa.cast(sa.literal(text, sa.Text), JSONB)}


async def lock_tree(session: AsyncSession) -> None:
    """Serialise moves in the tree: two concurrent moves could each pass the cycle check and
    together make a cycle. Moves are rare; nothing else takes this lock."""
    await session.execute(
        sa.select(sa.func.pg_advisory_xact_lock(int(LockClass.CATEGORY_TREE), SINGLETON_KEY))
    )


async def get_category(
    session: AsyncSession, category_id: uuid.UUID, *, for_update: bool = False
) -> CategoryState | None:
    query = sa.select(*CATEGORY_COLUMNS).where(categories_t.c.id == category_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    return None if row is None else _category(row)


async def find_by_id_or_code(
    session: AsyncSession, category_id: uuid.UUID | None, code: str
) -> list[CategoryState]:
    condition = categories_t.c.code == code
    if category_id is not None:
        condition = sa.or_(condition, categories_t.c.id == category_id)
    rows = await session.execute(sa.select(*CATEGORY_COLUMNS).where(condition))
    return [_category(r) for r in rows]


async def insert_category(session: AsyncSession, category: CategoryState) -> bool:
    """False when the id or the code was taken meanwhile (the caller reads the winner)."""
    inserted = await session.execute(
        pg_insert(categories_t)
        .values(
            id=category.id,
            code=category.code,
            currency=category.currency,
            normal_balance=category.normal_balance,
            parent_id=category.parent_id,
            **_metadata_values(category.metadata),
            version=category.version,
            created_at=category.created_at,
            updated_at=category.updated_at,
        )
        .on_conflict_do_nothing()
        .returning(categories_t.c.id)
    )
    return inserted.first() is not None


async def update_category(session: AsyncSession, category: CategoryState) -> None:
    await session.execute(
        sa.update(categories_t)
        .where(categories_t.c.id == category.id)
        .values(
            parent_id=category.parent_id,
            **_metadata_values(category.metadata),
            version=category.version,
            updated_at=category.updated_at,
        )
    )


async def list_categories(
    session: AsyncSession, *, parent_id: uuid.UUID | None, after: uuid.UUID | None, limit: int
) -> list[CategoryState]:
    query = sa.select(*CATEGORY_COLUMNS).order_by(categories_t.c.id).limit(limit)
    if parent_id is not None:
        query = query.where(categories_t.c.parent_id == parent_id)
    if after is not None:
        query = query.where(categories_t.c.id > after)
    return [_category(r) for r in await session.execute(query)]


_TREE = """
    WITH RECURSIVE tree(id, depth) AS (
        SELECT id, 0 FROM categories WHERE id = :category_id
        UNION
        SELECT c.id, t.depth + 1 FROM categories c JOIN tree t ON c.parent_id = t.id
         WHERE t.depth < :depth_max
    )
"""


async def is_descendant(
    session: AsyncSession, category_id: uuid.UUID, candidate_id: uuid.UUID
) -> bool:
    """Whether `candidate_id` is `category_id` or below it in the tree."""
    found = await session.execute(
        sa.text(_TREE + "SELECT 1 FROM tree WHERE id = :candidate_id LIMIT 1"),
        {
            "category_id": category_id,
            "candidate_id": candidate_id,
            "depth_max": limits.CATEGORY_DEPTH_MAX,
        },
    )
    return found.first() is not None


_ANCESTRY = sa.text(
    """
    WITH RECURSIVE up(id, parent_id, level) AS (
        SELECT id, parent_id, 1 FROM categories WHERE id = :category_id
        UNION ALL
        SELECT c.id, c.parent_id, u.level + 1 FROM categories c JOIN up u ON c.id = u.parent_id
         WHERE u.level <= :levels_max
    )
    SELECT coalesce(max(level), 0) FROM up
    """
)
_HEIGHT = sa.text(_TREE + "SELECT max(depth) + 1 FROM tree")
_ACCOUNT_LOCK = client_id_locks_sql(":ids", ClientIdKind.ACCOUNT_MEMBERSHIPS)


async def level_of(session: AsyncSession, category_id: uuid.UUID) -> int:
    """The category's level (a root is 1), counted up to just past CATEGORY_LEVELS_MAX."""
    found = await session.execute(
        _ANCESTRY, {"category_id": category_id, "levels_max": limits.CATEGORY_LEVELS_MAX}
    )
    return int(found.scalar_one())


async def height_of(session: AsyncSession, category_id: uuid.UUID) -> int:
    """Levels of the category's subtree, itself included (a leaf is 1), counted up to just past
    CATEGORY_LEVELS_MAX."""
    found = await session.execute(
        _HEIGHT, {"category_id": category_id, "depth_max": limits.CATEGORY_LEVELS_MAX}
    )
    return int(found.scalar_one())


async def _count(session: AsyncSession, column: sa.Column[Any], value: Any, limit: int) -> int:
    some = sa.select(sa.literal(1)).where(column == value).limit(limit).subquery()
    return int((await session.execute(sa.select(sa.func.count()).select_from(some))).scalar_one())


async def count_children(session: AsyncSession, category_id: uuid.UUID, limit: int) -> int:
    return await _count(session, categories_t.c.parent_id, category_id, limit)


async def count_members(session: AsyncSession, category_id: uuid.UUID, limit: int) -> int:
    return await _count(session, members_t.c.category_id, category_id, limit)


async def count_memberships(session: AsyncSession, account_id: uuid.UUID, limit: int) -> int:
    return await _count(session, members_t.c.account_id, account_id, limit)


async def is_member(session: AsyncSession, category_id: uuid.UUID, account_id: uuid.UUID) -> bool:
    found = await session.execute(
        sa.select(members_t.c.account_id).where(
            members_t.c.category_id == category_id, members_t.c.account_id == account_id
        )
    )
    return found.first() is not None


async def lock_parent(session: AsyncSession, parent_id: uuid.UUID) -> None:
    """A create under `parent_id`: moves in the tree wait for it (and it for them), so the
    levels it counts stay true; creates under one parent count its children one at a time."""
    await session.execute(
        sa.select(sa.func.pg_advisory_xact_lock_shared(int(LockClass.CATEGORY_TREE), SINGLETON_KEY))
    )
    await session.execute(
        sa.select(categories_t.c.id).where(categories_t.c.id == parent_id).with_for_update()
    )


async def lock_account_memberships(session: AsyncSession, account_id: uuid.UUID) -> None:
    """Two memberships of one account added at once count its categories one at a time: the
    account id's own lock (a keyed hash: no other id shares it)."""
    await session.execute(sa.text(_ACCOUNT_LOCK), {"ids": [account_id]})


async def add_member(
    session: AsyncSession, category_id: uuid.UUID, account_id: uuid.UUID, now: dt.datetime
) -> bool:
    """True when the account joined now; False when it was a member already."""
    inserted = await session.execute(
        pg_insert(members_t)
        .values(category_id=category_id, account_id=account_id, created_at=now)
        .on_conflict_do_nothing()
        .returning(members_t.c.account_id)
    )
    return inserted.first() is not None


async def remove_member(
    session: AsyncSession, category_id: uuid.UUID, account_id: uuid.UUID
) -> bool:
    removed = await session.execute(
        sa.delete(members_t)
        .where(members_t.c.category_id == category_id, members_t.c.account_id == account_id)
        .returning(members_t.c.account_id)
    )
    return removed.first() is not None


@dataclass(frozen=True, slots=True)
class Rollup:
    accounts: int
    posted: int
    available: int | None = None
    posted_debits: int | None = None
    posted_credits: int | None = None
    pending_debits: int | None = None
    pending_credits: int | None = None


# Every account once (DISTINCT), however many categories of the tree hold it. Sums in numeric:
# a total of bigint balances may exceed a bigint; it is exact and comes back as an integer.
_MEMBERS = """
    , members AS (
        SELECT DISTINCT m.account_id FROM category_accounts m JOIN tree t ON m.category_id = t.id
    )
"""
_BALANCE_NOW = sa.text(
    _TREE
    + _MEMBERS
    + """
    SELECT count(*) AS accounts,
           coalesce(sum(s.sign * s.posted), 0) AS posted,
           coalesce(sum(s.sign * (s.posted - s.held)), 0) AS available,
           coalesce(sum(a.posted_debits::numeric), 0) AS posted_debits,
           coalesce(sum(a.posted_credits::numeric), 0) AS posted_credits,
           coalesce(sum(a.pending_debits::numeric), 0) AS pending_debits,
           coalesce(sum(a.pending_credits::numeric), 0) AS pending_credits
      FROM members m
      JOIN accounts a ON a.id = m.account_id
     CROSS JOIN LATERAL (
           SELECT CASE WHEN a.normal_balance = :normal_balance THEN 1 ELSE -1 END AS sign,
                  CASE a.normal_balance
                       WHEN 'credit' THEN a.posted_credits::numeric - a.posted_debits
                       ELSE a.posted_debits::numeric - a.posted_credits END AS posted,
                  CASE a.normal_balance
                       WHEN 'credit' THEN a.pending_debits ELSE a.pending_credits END AS held
     ) s
    """
)
# As of an instant: each account's posted balance after its last entry at or before it (posted_at
# never decreases as sequence grows, so that entry is the last by (posted_at, sequence)).
_BALANCE_AS_OF = sa.text(
    _TREE
    + _MEMBERS
    + """
    SELECT count(*) AS accounts,
           coalesce(sum(CASE WHEN a.normal_balance = :normal_balance THEN 1 ELSE -1 END
                        * coalesce(e.balance_after, 0)::numeric), 0) AS posted
      FROM members m
      JOIN accounts a ON a.id = m.account_id
      LEFT JOIN LATERAL (
           SELECT balance_after FROM entries
            WHERE account_id = a.id AND posted_at <= :as_of
            ORDER BY posted_at DESC, sequence DESC
            LIMIT 1
      ) e ON true
    """
)


def _int(value: Decimal | int) -> int:
    return int(value)  # numeric sums of integers: exact


async def rollup(
    session: AsyncSession, category: CategoryState, as_of: dt.datetime | None
) -> Rollup:
    values: dict[str, Any] = {
        "category_id": category.id,
        "normal_balance": category.normal_balance,
        "depth_max": limits.CATEGORY_DEPTH_MAX,
    }
    if as_of is not None:
        row = (await session.execute(_BALANCE_AS_OF, {**values, "as_of": as_of})).one()
        return Rollup(accounts=row.accounts, posted=_int(row.posted))
    row = (await session.execute(_BALANCE_NOW, values)).one()
    return Rollup(
        accounts=row.accounts,
        posted=_int(row.posted),
        available=_int(row.available),
        posted_debits=_int(row.posted_debits),
        posted_credits=_int(row.posted_credits),
        pending_debits=_int(row.pending_debits),
        pending_credits=_int(row.pending_credits),
    )
