"""All SQL of the posting engine: locks, loads and bulk writes, to and from domain state."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core import pipeline
from ledger.core.bulk import BulkWriter, json_rows
from ledger.core.errors import InvariantViolation
from ledger.core.locks import ClientIdKind, client_id_locks_sql
from ledger.core.pipeline import Statement
from ledger.posting import movement_repository as movement
from ledger.posting.models import Account, Entry, Transfer, VoidedTransferId
from ledger.posting.monitors import MonitorState
from ledger.posting.state import AccountState, TransferState

accounts_t = cast(sa.Table, Account.__table__)
transfers_t = cast(sa.Table, Transfer.__table__)
entries_t = cast(sa.Table, Entry.__table__)
tombstones_t = cast(sa.Table, VoidedTransferId.__table__)


def _state_columns(table: sa.Table) -> list[sa.ColumnElement[Any]]:
    """What a state is read from: the metadata text as kept, as `metadata`; never the jsonb copy
    (it serves queries: jsonb reprints numbers, `1e308` as 309 digits)."""
    return [
        table.c.metadata_text.label("metadata") if c.name == "metadata_text" else c
        for c in table.c
        if c.name != "metadata"
    ]


ACCOUNT_COLUMNS = _state_columns(accounts_t)
TRANSFER_COLUMNS = _state_columns(transfers_t)


ACCOUNT_NAMES = tuple(c.name for c in ACCOUNT_COLUMNS)
TRANSFER_NAMES = tuple(c.name for c in TRANSFER_COLUMNS)


def _state_values(values: dict[str, Any]) -> dict[str, Any]:
    values["metadata"] = msgspec.Raw(values["metadata"])  # answered as the text it is
    return values


def account_from_row(row: sa.Row[Any]) -> AccountState:
    return AccountState(**_state_values(dict(row._mapping)))


def transfer_from_row(row: sa.Row[Any]) -> TransferState:
    return TransferState(**_state_values(dict(row._mapping)))


def _select(table: sa.Table, names: tuple[str, ...]) -> str:
    quoted = ", ".join(
        '"metadata_text" AS "metadata"' if name == "metadata" else f'"{name}"' for name in names
    )
    return f'SELECT {quoted} FROM "{table.name}" WHERE id = ANY(%s::uuid[]) ORDER BY id'


# The engine's reads, in psycopg's placeholder style: they run in pipelines (ledger.pipeline).
_ADVISORY_LOCKS = client_id_locks_sql("%s", ClientIdKind.TRANSFER)
_LOAD_ACCOUNTS = _select(accounts_t, ACCOUNT_NAMES)
_LOCK_ACCOUNTS = _LOAD_ACCOUNTS + " FOR UPDATE"
_LOAD_TRANSFERS = _select(transfers_t, TRANSFER_NAMES)
_LOCK_TRANSFERS = _LOAD_TRANSFERS + " FOR UPDATE"
_LOAD_TOMBSTONES = f'SELECT id FROM "{tombstones_t.name}" WHERE id = ANY(%s::uuid[])'
# The transaction's time, sent after its lock statements in the same pipeline: the server runs
# it once they hold, so it is later than every commit on those rows that came before (`now()`
# would be the transaction's start, before the waits). One value per transaction.
CLOCK = Statement("SELECT clock_timestamp()", fetch=True)


def clock_of(rows: list[Any] | None) -> dt.datetime:
    if not rows:
        raise InvariantViolation("the database clock returned no row")
    value: dt.datetime = rows[0][0]
    return value.astimezone(dt.UTC)


def lock_ids_statement(ids: Iterable[uuid.UUID]) -> Statement | None:
    """Serialise every operation on the same transfer id (create, post, void, reverse, expire),
    including the TCC case where the id does not exist yet. Taken before any row lock; each
    id's key is a keyed hash of the whole id (`ledger.core.locks`), so no other id shares it."""
    wanted = sorted(set(ids))
    return Statement(_ADVISORY_LOCKS, (wanted,)) if wanted else None


def lock_accounts_statement(ids: Iterable[uuid.UUID]) -> Statement | None:
    """Lock every account in one global order (by id): no circular wait, no deadlock."""
    wanted = sorted(set(ids))
    return Statement(_LOCK_ACCOUNTS, (wanted,), fetch=True) if wanted else None


def load_accounts_statement(ids: Iterable[uuid.UUID]) -> Statement:
    """Read accounts without locking them (API reads)."""
    return Statement(_LOAD_ACCOUNTS, (sorted(set(ids)),), fetch=True)


def load_transfers_statement(
    ids: Iterable[uuid.UUID], *, for_update: bool = False
) -> Statement | None:
    wanted = sorted(set(ids))
    if not wanted:
        return None
    return Statement(_LOCK_TRANSFERS if for_update else _LOAD_TRANSFERS, (wanted,), fetch=True)


def tombstones_statement(ids: Iterable[uuid.UUID]) -> Statement | None:
    wanted = sorted(set(ids))
    return Statement(_LOAD_TOMBSTONES, (wanted,), fetch=True) if wanted else None


def accounts_of(rows: list[Any] | None) -> dict[uuid.UUID, AccountState]:
    return {
        row[0]: AccountState(**_state_values(dict(zip(ACCOUNT_NAMES, row, strict=True))))
        for row in rows or ()
    }


def transfers_of(rows: list[Any] | None) -> dict[uuid.UUID, TransferState]:
    return {
        row[0]: TransferState(**_state_values(dict(zip(TRANSFER_NAMES, row, strict=True))))
        for row in rows or ()
    }


def tombstones_of(rows: list[Any] | None) -> set[uuid.UUID]:
    return {row[0] for row in rows or ()}


@dataclass(slots=True)
class Locked:
    accounts: dict[uuid.UUID, AccountState]
    transfers: dict[uuid.UUID, TransferState]
    tombstones: set[uuid.UUID]
    now: dt.datetime  # the database clock once the locks were held
    # Money movement: the period lock then, and the locked accounts' balance monitors.
    locked_until: dt.datetime | None = None
    monitors: dict[uuid.UUID, list[MonitorState]] = field(default_factory=dict)


async def lock_for_create(
    session: AsyncSession, client_ids: list[uuid.UUID], account_ids: Iterable[uuid.UUID]
) -> Locked:
    """In one round trip, in lock order: the transfer ids, the accounts (by id), then the
    transfers and tombstones already stored under the client's ids, and the clock."""
    account_ids = sorted(set(account_ids))
    _, _, accounts, monitors, transfers, tombstones, clock = await pipeline.run(
        session,
        [
            movement.PERIOD_SHARE,
            lock_ids_statement(client_ids),
            lock_accounts_statement(account_ids),
            movement.monitors_statement(account_ids),
            load_transfers_statement(client_ids),
            tombstones_statement(client_ids),
            movement.CLOCK_AND_PERIOD,
        ],
    )
    return Locked(
        accounts=accounts_of(accounts),
        transfers=transfers_of(transfers),
        tombstones=tombstones_of(tombstones),
        now=clock_of(clock),
        locked_until=movement.period_of(clock),
        monitors=movement.monitors_of(monitors),
    )


async def lock_existing(
    session: AsyncSession, transfer_id: uuid.UUID
) -> tuple[Locked, TransferState | None]:
    """Lock order for operations on an existing transfer: its id, then its accounts, then its
    row. Two round trips: the id lock with a first read (to learn the accounts), then the
    accounts and the row, both FOR UPDATE. Each reads the clock after its locks: the last one
    read is the transaction's time."""
    _, _, found, clock = await pipeline.run(
        session,
        [
            movement.PERIOD_SHARE,
            lock_ids_statement([transfer_id]),
            load_transfers_statement([transfer_id]),
            CLOCK,
        ],
    )
    peek = transfers_of(found).get(transfer_id)
    if peek is None:
        return Locked({}, {}, set(), clock_of(clock)), None
    account_ids = [peek.debit_account_id, peek.credit_account_id]
    accounts, monitors, locked, clock = await pipeline.run(
        session,
        [
            lock_accounts_statement(account_ids),
            movement.monitors_statement(account_ids),
            load_transfers_statement([transfer_id], for_update=True),
            movement.CLOCK_AND_PERIOD,
        ],
    )
    transfer = transfers_of(locked)[transfer_id]
    state = Locked(
        accounts=accounts_of(accounts),
        transfers={transfer_id: transfer},
        tombstones=set(),
        now=clock_of(clock),
        locked_until=movement.period_of(clock),
        monitors=movement.monitors_of(monitors),
    )
    return state, transfer


async def load_transfers(
    session: AsyncSession, ids: Iterable[uuid.UUID], *, for_update: bool = False
) -> dict[uuid.UUID, TransferState]:
    [rows] = await pipeline.run(session, [load_transfers_statement(ids, for_update=for_update)])
    return transfers_of(rows)


async def load_tombstones(session: AsyncSession, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    [rows] = await pipeline.run(session, [tombstones_statement(ids)])
    return tombstones_of(rows)


async def insert_tombstone(session: AsyncSession, transfer_id: uuid.UUID, now: dt.datetime) -> None:
    await session.execute(sa.insert(tombstones_t).values(id=transfer_id, created_at=now))


def _transfer_row(t: TransferState) -> dict[str, Any]:
    """A new transfer as its row: every column, in the table's order."""
    return {
        "id": t.id,
        "debit_account_id": t.debit_account_id,
        "credit_account_id": t.credit_account_id,
        "amount": t.amount,
        "currency": t.currency,
        "state": t.state,
        "posted_amount": t.posted_amount,
        "reversed_amount": t.reversed_amount,
        "reference": t.reference,
        "metadata": t.metadata,  # Raw: the jsonb copy is parsed from the text as sent
        "metadata_text": bytes(t.metadata).decode(),
        "timeout_at": t.timeout_at,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "reversal_of": t.reversal_of,
        "created_pending": t.created_pending,
        "timeout_seconds": t.timeout_seconds,
        "imported_at": t.imported_at,
        "amount_ceiling": t.amount_ceiling,
        "balances_after": t.balances_after,
    }


_UPDATE_TRANSFERS = f"""
    UPDATE "{transfers_t.name}" AS t
       SET state = v.state, posted_amount = v.posted_amount,
           reversed_amount = v.reversed_amount, updated_at = v.updated_at,
           balances_after = v.balances_after
      FROM jsonb_to_recordset(%s::jsonb)
           AS v(id uuid, state text, posted_amount bigint, reversed_amount bigint,
                updated_at timestamptz, balances_after bigint[])
     WHERE t.id = v.id
"""


async def add_transfers(writer: BulkWriter, transfers: Iterable[TransferState]) -> None:
    """Queue new transfers (inserted) and changed ones (state and amounts updated)."""
    new_rows = []
    changed_rows = []
    for t in transfers:
        if t.is_new:
            new_rows.append(_transfer_row(t))
        elif t.changed:
            changed_rows.append(
                {
                    "id": t.id,
                    "state": t.state,
                    "posted_amount": t.posted_amount,
                    "reversed_amount": t.reversed_amount,
                    "updated_at": t.updated_at,
                    "balances_after": t.balances_after,
                }
            )
    await writer.insert(transfers_t, new_rows)
    if changed_rows:
        writer.add(Statement(_UPDATE_TRANSFERS, (json_rows(changed_rows),)))


async def add_entries(writer: BulkWriter, entries: list[dict[str, Any]]) -> None:
    await writer.insert(entries_t, entries)


_UPDATE_ACCOUNTS = f"""
    UPDATE "{accounts_t.name}" AS a
       SET version = v.version,
           posted_debits = v.posted_debits,
           posted_credits = v.posted_credits,
           pending_debits = v.pending_debits,
           pending_credits = v.pending_credits,
           updated_at = v.updated_at
      FROM jsonb_to_recordset(%s::jsonb)
           AS v(id uuid, version bigint, posted_debits bigint, posted_credits bigint,
                pending_debits bigint, pending_credits bigint, updated_at timestamptz)
     WHERE a.id = v.id
"""


def add_accounts(writer: BulkWriter, accounts: Iterable[AccountState]) -> None:
    """Every changed account in one statement (rows already locked, in id order)."""
    changed = [
        {
            "id": a.id,
            "version": a.version,
            "posted_debits": a.posted_debits,
            "posted_credits": a.posted_credits,
            "pending_debits": a.pending_debits,
            "pending_credits": a.pending_credits,
            "updated_at": a.updated_at,
        }
        for a in accounts
        if a.changed
    ]
    if changed:
        writer.add(Statement(_UPDATE_ACCOUNTS, (json_rows(changed),)))


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
