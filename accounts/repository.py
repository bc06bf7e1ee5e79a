"""All SQL about accounts outside the posting engine: create, read, list, patch, statements."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core import pipeline
from ledger.posting.metadata_query import page_query
from ledger.posting.models import Account, Entry
from ledger.posting.repository import (
    ACCOUNT_COLUMNS,
    account_from_row,
    accounts_of,
    load_accounts_statement,
    lock_accounts_statement,
)
from ledger.posting.state import AccountState

accounts_t = cast(sa.Table, Account.__table__)
entries_t = cast(sa.Table, Entry.__table__)


def _metadata_values(metadata: msgspec.Raw) -> dict[str, Any]:
    """The metadata columns: the text as kept (what is answered) and its jsonb copy for queries,
    parsed by the database from that same text."""
    text = bytes(metadata).decode()
    return {"metadata_text": text, "metadata": sa.cast(sa.literal(text, sa.Text), JSONB)}


async def insert_account(session: AsyncSession, account: AccountState) -> bool:
    """Insert unless the id or the code is taken; False when it was (a concurrent create that
    committed first wins, and this one then reads the winner instead of failing)."""
    inserted = await session.execute(
        pg_insert(accounts_t)
        .values(
            id=account.id,
            code=account.code,
            currency=account.currency,
            normal_balance=account.normal_balance,
            min_balance=account.min_balance,
            status=account.status,
            **_metadata_values(account.metadata),
            version=account.version,
            posted_debits=0,
            posted_credits=0,
            pending_debits=0,
            pending_credits=0,
            created_at=account.created_at,
            updated_at=account.updated_at,
        )
        .on_conflict_do_nothing()
        .returning(accounts_t.c.id)
    )
    return inserted.first() is not None


async def get_account(
    session: AsyncSession, account_id: uuid.UUID, *, for_update: bool = False
) -> AccountState | None:
    build = lock_accounts_statement if for_update else load_accounts_statement
    [rows] = await pipeline.run(session, [build([account_id])])
    return accounts_of(rows).get(account_id)


async def find_by_id_or_code(
    session: AsyncSession, account_id: uuid.UUID | None, code: str
) -> list[AccountState]:
    """The accounts holding this id or this code, read in one snapshot (so a concurrent create
    that commits meanwhile is either wholly seen or wholly not)."""
    condition = accounts_t.c.code == code
    if account_id is not None:
        condition = sa.or_(condition, accounts_t.c.id == account_id)
    rows = await session.execute(sa.select(*ACCOUNT_COLUMNS).where(condition))
    return [account_from_row(r) for r in rows]


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
    query = list_accounts_query(
        code=code, currency=currency, status=status, after=after, limit=limit, metadata=metadata
    )
    return [account_from_row(r) for r in await session.execute(query)]


def list_accounts_query(
    *,
    code: str | None,
    currency: str | None,
    status: str | None,
    after: uuid.UUID | None,
    limit: int,
    metadata: Sequence[tuple[str, str]] = (),
) -> sa.Select[Any]:
    """The list's statement (a test EXPLAINs it: metadata filters must use their index)."""
    conditions = []
    if code is not None:
        conditions.append(accounts_t.c.code == code)
    if currency is not None:
        conditions.append(accounts_t.c.currency == currency)
    if status is not None:
        conditions.append(accounts_t.c.status == status)
    if after is not None:
        conditions.append(accounts_t.c.id > after)
    return page_query(accounts_t, ACCOUNT_COLUMNS, conditions, metadata, limit)


async def update_account(session: AsyncSession, account: AccountState) -> None:
    await session.execute(
        sa.update(accounts_t)
        .where(accounts_t.c.id == account.id)
        .values(
            **_metadata_values(account.metadata),
            status=account.status,
            min_balance=account.min_balance,
            version=account.version,
            updated_at=account.updated_at,
        )
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
    query = list_entries_query(
        account_id, start=start, end=end, after_sequence=after_sequence, limit=limit
    )
    # Plain `str` keys: the subquery's column names may come back as a str subclass, which
    # msgspec does not take for a struct's field names.
    return [{str(k): v for k, v in r._mapping.items()} for r in await session.execute(query)]


# An upper bound past every sequence (a bigint's largest value).
SEQUENCE_PAST_ANY = sa.literal(2**63 - 1, sa.BigInteger)


def first_sequence_from(account_id: uuid.UUID, at: dt.datetime) -> sa.ScalarSelect[Any]:
    """The sequence of the account's first entry posted at or after `at` (NULL when none): one
    probe of ix_entries_account_id_posted_at_sequence."""
    return (
        sa.select(entries_t.c.sequence)
        .where(entries_t.c.account_id == account_id, entries_t.c.posted_at >= at)
        .order_by(entries_t.c.posted_at, entries_t.c.sequence)
        .limit(1)
        .scalar_subquery()
    )


def list_entries_query(
    account_id: uuid.UUID,
    *,
    start: dt.datetime | None,
    end: dt.datetime | None,
    after_sequence: int | None,
    limit: int,
) -> sa.Select[Any]:
    """A statement page (a test EXPLAINs it). Per account, `posted_at` never decreases as the
    sequence grows (ledger.posting.periods), so the entries posted in [start, end) are those
    from the first entry at or after `start` up to, not including, the first at or after `end`:
    each bound is one index probe. The page is then the next `limit` entries in sequence order
    from the lower bound (on the (account_id, sequence) key), cut at the upper bound: it reads
    `limit` entries at most, however many the account has before, in or after the range.
    Filtering `posted_at` on each row instead passes over every entry of the account before
    `start`, or sorts every one after it."""
    columns = (
        entries_t.c.sequence,
        entries_t.c.transfer_id,
        entries_t.c.direction,
        entries_t.c.amount,
        entries_t.c.balance_after,
        entries_t.c.posted_at,
    )
    following = sa.select(*columns).where(entries_t.c.account_id == account_id)
    if start is not None:
        # One lower bound (the later of the range's start and the cursor's next): the planner
        # then sees one open range and reads it in order, where two bounds, one of them a
        # literal, tempt it into sorting every entry after the cursor.
        lower: sa.ColumnElement[Any] = first_sequence_from(account_id, start)
        if after_sequence is not None:
            lower = sa.func.greatest(lower, after_sequence + 1)
        following = following.where(entries_t.c.sequence >= lower)
    elif after_sequence is not None:
        following = following.where(entries_t.c.sequence > after_sequence)
    page = following.order_by(entries_t.c.sequence).limit(limit).subquery("page")
    query = sa.select(*page.c).order_by(page.c.sequence)
    if end is not None:
        # No entry at or after `end`: every entry is before it (a bound past any sequence).
        stop = sa.func.coalesce(first_sequence_from(account_id, end), SEQUENCE_PAST_ANY)
        query = query.where(page.c.sequence < stop)
    return query


async def balance_as_of(
    session: AsyncSession, account_id: uuid.UUID, as_of: dt.datetime
) -> tuple[int, int] | None:
    """(posted balance, sequence) of the last entry at or before `as_of`: the entry the reports
    read for the same instant (one probe of ix_entries_account_id_posted_at_sequence)."""
    row = (
        await session.execute(
            sa.select(entries_t.c.balance_after, entries_t.c.sequence)
            .where(entries_t.c.account_id == account_id, entries_t.c.posted_at <= as_of)
            .order_by(entries_t.c.posted_at.desc(), entries_t.c.sequence.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else (row.balance_after, row.sequence)
