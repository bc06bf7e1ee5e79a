"""All SQL of the posting kernel: locks, loads and bulk writes."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.models import Account
from ledger.copy import insert_rows
from ledger.posting.rules import AccountState
from transfers.models import Entry, Transfer, VoidedTransferId

accounts_t = cast(sa.Table, Account.__table__)
transfers_t = cast(sa.Table, Transfer.__table__)
entries_t = cast(sa.Table, Entry.__table__)
tombstones_t = cast(sa.Table, VoidedTransferId.__table__)

ACCOUNT_COLUMNS = [c for c in accounts_t.c]
UUID_ARRAY = postgresql.ARRAY(postgresql.UUID(as_uuid=True))
TRANSFER_COLUMNS = [c for c in transfers_t.c]


@dataclass(slots=True)
class TransferRow:
    id: uuid.UUID
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: int
    currency: str
    state: str
    posted_amount: int
    reversed_amount: int
    reference: str | None
    metadata: dict[str, Any]
    timeout_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    reversal_of: uuid.UUID | None
    created_pending: bool
    timeout_seconds: int | None
    is_new: bool = field(default=False, compare=False)
    changed: bool = field(default=False, compare=False)

    def as_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "debit_account_id": self.debit_account_id,
            "credit_account_id": self.credit_account_id,
            "amount": self.amount,
            "currency": self.currency,
            "state": self.state,
            "posted_amount": self.posted_amount,
            "reversed_amount": self.reversed_amount,
            "reference": self.reference,
            "metadata": self.metadata,
            "timeout_at": self.timeout_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "reversal_of": self.reversal_of,
            "created_pending": self.created_pending,
            "timeout_seconds": self.timeout_seconds,
        }


def account_from_row(row: sa.Row[Any]) -> AccountState:
    m = row._mapping
    return AccountState(
        id=m["id"],
        code=m["code"],
        currency=m["currency"],
        normal_balance=m["normal_balance"],
        min_balance=m["min_balance"],
        status=m["status"],
        metadata=m["metadata"],
        version=m["version"],
        posted_debits=m["posted_debits"],
        posted_credits=m["posted_credits"],
        pending_debits=m["pending_debits"],
        pending_credits=m["pending_credits"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def transfer_from_row(row: sa.Row[Any]) -> TransferRow:
    m = row._mapping
    return TransferRow(
        id=m["id"],
        debit_account_id=m["debit_account_id"],
        credit_account_id=m["credit_account_id"],
        amount=m["amount"],
        currency=m["currency"],
        state=m["state"],
        posted_amount=m["posted_amount"],
        reversed_amount=m["reversed_amount"],
        reference=m["reference"],
        metadata=m["metadata"],
        timeout_at=m["timeout_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        reversal_of=m["reversal_of"],
        created_pending=m["created_pending"],
        timeout_seconds=m["timeout_seconds"],
    )


def advisory_key(value: uuid.UUID) -> int:
    """A signed 64-bit key for pg_advisory_xact_lock, from the id's random low bits."""
    key = value.int & 0xFFFF_FFFF_FFFF_FFFF
    return key - (1 << 64) if key >= (1 << 63) else key


async def lock_transfer_ids(session: AsyncSession, ids: Iterable[uuid.UUID]) -> None:
    """Serialise every operation on the same transfer id (create, post, void, reverse, expire),
    including the TCC case where the id does not exist yet. Taken before any row lock."""
    keys = sorted({advisory_key(i) for i in ids})
    if not keys:
        return
    await session.execute(
        sa.text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
        {"keys": keys},
    )


async def lock_accounts(
    session: AsyncSession, ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, AccountState]:
    """Lock every account in one global order (by id): no circular wait, no deadlock."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    result = await session.execute(
        sa.select(*ACCOUNT_COLUMNS)
        .where(accounts_t.c.id == sa.any_(sa.bindparam("ids", wanted, type_=UUID_ARRAY)))
        .order_by(accounts_t.c.id)
        .with_for_update()
    )
    return {row.id: account_from_row(row) for row in result}


async def load_transfers(
    session: AsyncSession, ids: Iterable[uuid.UUID], *, for_update: bool = False
) -> dict[uuid.UUID, TransferRow]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    query = (
        sa.select(*TRANSFER_COLUMNS)
        .where(transfers_t.c.id == sa.any_(sa.bindparam("ids", wanted, type_=UUID_ARRAY)))
        .order_by(transfers_t.c.id)
    )
    if for_update:
        query = query.with_for_update()
    result = await session.execute(query)
    return {row.id: transfer_from_row(row) for row in result}


async def load_tombstones(session: AsyncSession, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    result = await session.execute(
        sa.select(tombstones_t.c.id).where(
            tombstones_t.c.id == sa.any_(sa.bindparam("ids", wanted, type_=UUID_ARRAY))
        )
    )
    return set(result.scalars())


async def insert_tombstone(session: AsyncSession, transfer_id: uuid.UUID, now: dt.datetime) -> None:
    await session.execute(sa.insert(tombstones_t).values(id=transfer_id, created_at=now))


async def write_transfers(session: AsyncSession, transfers: Iterable[TransferRow]) -> None:
    new_rows = []
    changed_rows = []
    for t in transfers:
        if t.is_new:
            new_rows.append(t.as_row())
        elif t.changed:
            changed_rows.append(
                {
                    "b_id": t.id,
                    "state": t.state,
                    "posted_amount": t.posted_amount,
                    "reversed_amount": t.reversed_amount,
                    "updated_at": t.updated_at,
                }
            )
    await insert_rows(session, transfers_t, new_rows)
    if changed_rows:
        await session.execute(
            sa.update(transfers_t)
            .where(transfers_t.c.id == sa.bindparam("b_id"))
            .values(
                state=sa.bindparam("state"),
                posted_amount=sa.bindparam("posted_amount"),
                reversed_amount=sa.bindparam("reversed_amount"),
                updated_at=sa.bindparam("updated_at"),
            ),
            changed_rows,
            execution_options={"synchronize_session": False},
        )


async def write_entries(session: AsyncSession, entries: list[dict[str, Any]]) -> None:
    await insert_rows(session, entries_t, entries)


_UPDATE_ACCOUNTS = sa.text(
    """
    UPDATE accounts AS a
       SET version = v.version,
           posted_debits = v.posted_debits,
           posted_credits = v.posted_credits,
           pending_debits = v.pending_debits,
           pending_credits = v.pending_credits,
           updated_at = v.updated_at
      FROM unnest(CAST(:ids AS uuid[]), CAST(:versions AS bigint[]),
                  CAST(:posted_debits AS bigint[]), CAST(:posted_credits AS bigint[]),
                  CAST(:pending_debits AS bigint[]), CAST(:pending_credits AS bigint[]),
                  CAST(:updated_at AS timestamptz[]))
           AS v(id, version, posted_debits, posted_credits, pending_debits, pending_credits,
                updated_at)
     WHERE a.id = v.id
    """
)


async def write_accounts(session: AsyncSession, accounts: Iterable[AccountState]) -> None:
    """Every changed account in one statement (rows already locked, in id order)."""
    changed = [a for a in accounts if a.changed]
    if not changed:
        return
    await session.execute(
        _UPDATE_ACCOUNTS,
        {
            "ids": [a.id for a in changed],
            "versions": [a.version for a in changed],
            "posted_debits": [a.posted_debits for a in changed],
            "posted_credits": [a.posted_credits for a in changed],
            "pending_debits": [a.pending_debits for a in changed],
            "pending_credits": [a.pending_credits for a in changed],
            "updated_at": [a.updated_at for a in changed],
        },
    )


async def due_pending_ids(session: AsyncSession, now: dt.datetime, limit: int) -> list[uuid.UUID]:
    result = await session.execute(
        sa.select(transfers_t.c.id)
        .where(transfers_t.c.state == "pending")
        .where(transfers_t.c.timeout_at.is_not(None))
        .where(transfers_t.c.timeout_at <= now)
        .order_by(transfers_t.c.timeout_at)
        .limit(limit)
    )
    return list(result.scalars())
