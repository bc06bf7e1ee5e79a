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
    if account_id is not None:
        conditions.append(
            sa.or_(
                transfers_t.c.debit_account_id == account_id,
                transfers_t.c.credit_account_id == account_id,
            )
        )
    if state is not None:
        conditions.append(transfers_t.c.state == state)
    if after is not None:
        conditions.append(transfers_t.c.id > after)
    return page_query(transfers_t, TRANSFER_COLUMNS, conditions, metadata, limit)


async def account_currencies(
    session: AsyncSession, account_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Each existing account's currency (immutable: read without a lock)."""
    rows = await session.execute(
        sa.select(accounts_t.c.id, accounts_t.c.currency).where(accounts_t.c.id.in_(account_ids))
    )
    return {row[0]: row[1] for row in rows.all()}
