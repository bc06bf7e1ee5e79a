"""All SQL of the consuming side: the inbox, per-subject sequences, the balances projection and
the reads `ledger reconcile` compares. Everything here runs in the consumer's own transaction,
so "applied", "remembered as applied" and "sequence advanced" commit together or not at all.

The ledger's accounts table belongs to a layer above this one: `ledger reconcile` passes it in.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from outbox.models import ConsumerBalance, ConsumerInbox, ConsumerSequence

inbox_t = cast(sa.Table, ConsumerInbox.__table__)
sequences_t = cast(sa.Table, ConsumerSequence.__table__)
balances_t = cast(sa.Table, ConsumerBalance.__table__)


@dataclass(frozen=True, slots=True)
class BalanceRow:
    account_id: uuid.UUID
    version: int
    posted_debits: int
    posted_credits: int
    pending_debits: int
    pending_credits: int


async def claim_event(
    session: AsyncSession, group: str, event_id: uuid.UUID, now: dt.datetime
) -> bool:
    """True when this group sees the event for the first time. A concurrent claim of the same
    id (two members during a rebalance) waits on the first one's row, then finds it taken."""
    statement = (
        insert(inbox_t)
        .values(group_id=group, event_id=event_id, processed_at=now)
        .on_conflict_do_nothing(index_elements=["group_id", "event_id"])
        .returning(inbox_t.c.event_id)
    )
    return (await session.execute(statement)).first() is not None


async def last_sequence(session: AsyncSession, group: str, subject: str) -> int | None:
    query = (
        sa.select(sequences_t.c.sequence)
        .where(sequences_t.c.group_id == group, sequences_t.c.subject == subject)
        .with_for_update()
    )
    value = (await session.execute(query)).scalar()
    return None if value is None else int(value)


async def save_sequence(
    session: AsyncSession, group: str, subject: str, sequence: int, now: dt.datetime
) -> None:
    """Remember the highest sequence applied; never moves backwards."""
    statement = insert(sequences_t).values(
        group_id=group, subject=subject, sequence=sequence, updated_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=["group_id", "subject"],
        set_={
            "sequence": sa.func.greatest(sequences_t.c.sequence, statement.excluded.sequence),
            "updated_at": statement.excluded.updated_at,
        },
    )
    await session.execute(statement)


async def upsert_balance(
    session: AsyncSession, group: str, row: BalanceRow, now: dt.datetime
) -> None:
    """The projection keeps the newest version it has seen: an older snapshot never wins."""
    statement = insert(balances_t).values(
        group_id=group,
        account_id=row.account_id,
        version=row.version,
        posted_debits=row.posted_debits,
        posted_credits=row.posted_credits,
        pending_debits=row.pending_debits,
        pending_credits=row.pending_credits,
        updated_at=now,
    )
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["group_id", "account_id"],
        set_={
            "version": excluded.version,
            "posted_debits": excluded.posted_debits,
            "posted_credits": excluded.posted_credits,
            "pending_debits": excluded.pending_debits,
            "pending_credits": excluded.pending_credits,
            "updated_at": excluded.updated_at,
        },
        where=balances_t.c.version < excluded.version,
    )
    await session.execute(statement)


def _balance_row(row: Any) -> BalanceRow:
    return BalanceRow(
        account_id=row[0],
        version=int(row[1]),
        posted_debits=int(row[2]),
        posted_credits=int(row[3]),
        pending_debits=int(row[4]),
        pending_credits=int(row[5]),
    )


@dataclass(frozen=True, slots=True)
class Difference:
    account_id: uuid.UUID
    ledger: BalanceRow | None
    projection: BalanceRow | None


async def balance_differences(
    session: AsyncSession, group: str, ledger_accounts: sa.FromClause
) -> list[Difference]:
    """Accounts whose projected version or balance components differ from the ledger's, read
    in one statement (one snapshot) with a full outer join, in account id order.

    `ledger_accounts` is the ledger's accounts table (or anything with its columns `id`,
    `version` and the four balance components): joining it here, rather than reading it apart,
    keeps both sides in one snapshot."""
    projection = sa.select(balances_t).where(balances_t.c.group_id == group).subquery("projection")
    a, p = ledger_accounts.c, projection.c
    columns = ("version", "posted_debits", "posted_credits", "pending_debits", "pending_credits")
    differs = sa.or_(*(a[name].is_distinct_from(p[name]) for name in columns))
    query = (
        sa.select(
            sa.func.coalesce(a.id, p.account_id).label("account_id"),
            a.id.label("ledger_id"),
            *(a[name].label(f"l_{name}") for name in columns),
            p.account_id.label("projection_id"),
            *(p[name].label(f"p_{name}") for name in columns),
        )
        .select_from(ledger_accounts.join(projection, a.id == p.account_id, full=True))
        .where(differs)
        .order_by(sa.text("account_id"))
    )
    differences = []
    for row in await session.execute(query):
        m = row._mapping
        ledger = (
            None
            if m["ledger_id"] is None
            else _balance_row([m["ledger_id"], *(m[f"l_{n}"] for n in columns)])
        )
        projected = (
            None
            if m["projection_id"] is None
            else _balance_row([m["projection_id"], *(m[f"p_{n}"] for n in columns)])
        )
        differences.append(Difference(m["account_id"], ledger, projected))
    return differences
