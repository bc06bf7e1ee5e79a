"""Transfer reads for the API (the posting engine owns every transfer write)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.posting.metadata_query import page_query
from ledger.posting.repository import (
    TRANSFER_COLUMNS,
    accounts_t,
    load_transfers,
    tombstones_t,
    transfer_from_row,
    transfers_t,
)
from ledger.posting.state import TransferState


async def get_transfer(session: AsyncSession, transfer_id: uuid.UUID) -> TransferState | None:
    # The engine's fixed statement, pipelined (BEGIN goes with it): cheaper than a select.
    return (await load_transfers(session, [transfer_id])).get(transfer_id)


async def tombstone_time(session: AsyncSession, transfer_id: uuid.UUID) -> dt.datetime | None:
    value = (
        await session.execute(
            sa.select(tombstones_t.c.created_at).where(tombstones_t.c.id == transfer_id)
        )
    ).scalar()
    return value


async def list_transfers(
    session: AsyncSession,
    *,
    account_id: uuid.UUID | None,
    state: str | None,
    after: uuid.UUID | None,
    limit: int,
    metadata: Sequence[tuple[str, str]] = (),
) -> list[TransferState]:
    query = list_transfers_query(
        account_id=account_id, state=state, after=after, limit=limit, metadata=metadata
    )
    return [transfer_from_row(r) for r in await session.execute(query)]


def list_transfers_query(
    *,
    account_id: uuid.UUID | None,
    state: str | None,
    after: uuid.UUID | None,
    limit: int,
    metadata: Sequence[tuple[str, str]] = (),
) -> sa.Select[Any]:
    """The list's statement (a test EXPLAINs it: metadata filters must use their index)."""
    conditions = []
    if state is not None:
        conditions.append(transfers_t.c.state == state)
    if after is not None:
        conditions.append(transfers_t.c.id > after)
    if account_id is not None and not metadata:
        return account_page_query(account_id, conditions, limit)
    if account_id is not None:
        conditions.append(
            sa.or_(
                transfers_t.c.debit_account_id == account_id,
                transfers_t.c.credit_account_id == account_id,
            )
        )
    return page_query(transfers_t, TRANSFER_COLUMNS, conditions, metadata, limit)


def account_page_query(
    account_id: uuid.UUID, conditions: Sequence[sa.ColumnElement[bool]], limit: int
) -> sa.Select[Any]:
    """A page of the transfers of an account: the next `limit` ids on each side, each read in
    order from its (debit_account_id, id) or (credit_account_id, id) index, then merged and
    cut. It reads at most `2 * limit` index entries, where `debit = A OR credit = A` is either
    a walk of every transfer in id order, filtered (for a quiet account, most of the table), or
    a bitmap of all the account's transfers, sorted. A transfer never has one account on both
    sides (the `distinct_accounts` check), so the two sides never hold the same id."""
    sides = [
        sa.select(transfers_t.c.id)
        .where(side == account_id, *conditions)
        .order_by(transfers_t.c.id)
        .limit(limit)
        for side in (transfers_t.c.debit_account_id, transfers_t.c.credit_account_id)
    ]
    found = sa.union_all(*sides).subquery("found")
    page_ids = sa.select(found.c.id).order_by(found.c.id).limit(limit)
    return (
        sa.select(*TRANSFER_COLUMNS)
        .where(transfers_t.c.id.in_(page_ids))
        .order_by(transfers_t.c.id)
    )


async def account_currencies(
    session: AsyncSession, account_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Each existing account's currency (immutable: read without a lock)."""
    rows = await session.execute(
        sa.select(accounts_t.c.id, accounts_t.c.currency).where(accounts_t.c.id.in_(account_ids))
    )
    return {row[0]: row[1] for row in rows.all()}
