"""Every SQL statement of the console: its sessions and secret, and the reads no other package
answers (an account's audit trail with its transfers', the chart's points, the chain's counts)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.apikeys.models import ApiKey
from ledger.audit.models import AuditRecord, AuditSeal
from ledger.console.models import ConsoleSecret, ConsoleSession
from ledger.posting.models import Entry, Transfer

sessions_t = cast(sa.Table, ConsoleSession.__table__)
secret_t = cast(sa.Table, ConsoleSecret.__table__)
keys_t = cast(sa.Table, ApiKey.__table__)
records_t = cast(sa.Table, AuditRecord.__table__)
seals_t = cast(sa.Table, AuditSeal.__table__)
entries_t = cast(sa.Table, Entry.__table__)
transfers_t = cast(sa.Table, Transfer.__table__)


# -- sessions and secret --------------------------------------------------------------------------


async def csrf_secret(session: AsyncSession) -> str | None:
    value = (await session.execute(sa.select(secret_t.c.csrf_secret))).scalar()
    return None if value is None else str(value)


async def session_data(session: AsyncSession, session_id: str, now: dt.datetime) -> bytes | None:
    query = sa.select(sessions_t.c.data).where(
        sessions_t.c.id == session_id, sessions_t.c.expires_at > now
    )
    value = (await session.execute(query)).scalar()
    return None if value is None else bytes(value)


async def renew_session(session: AsyncSession, session_id: str, expires_at: dt.datetime) -> None:
    await session.execute(
        sa.update(sessions_t).where(sessions_t.c.id == session_id).values(expires_at=expires_at)
    )


async def put_session(
    session: AsyncSession, session_id: str, data: bytes, expires_at: dt.datetime
) -> None:
    insert = pg_insert(sessions_t).values(id=session_id, data=data, expires_at=expires_at)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[sessions_t.c.id],
            set_={"data": insert.excluded.data, "expires_at": insert.excluded.expires_at},
        )
    )


async def delete_session(session: AsyncSession, session_id: str) -> None:
    await session.execute(sa.delete(sessions_t).where(sessions_t.c.id == session_id))


async def delete_all_sessions(session: AsyncSession) -> None:
    await session.execute(sa.delete(sessions_t))


async def session_expires_at(session: AsyncSession, session_id: str) -> dt.datetime | None:
    query = sa.select(sessions_t.c.expires_at).where(sessions_t.c.id == session_id)
    value = (await session.execute(query)).scalar()
    return value if isinstance(value, dt.datetime) else None


async def sweep_expired_sessions(session: AsyncSession, now: dt.datetime, rows_max: int) -> None:
    """Delete at most `rows_max` expired sessions: bounded work, done at each sign-in."""
    expired = (
        sa.select(sessions_t.c.id)
        .where(sessions_t.c.expires_at <= now)
        .order_by(sessions_t.c.expires_at)
        .limit(rows_max)
        .scalar_subquery()
    )
    await session.execute(sa.delete(sessions_t).where(sessions_t.c.id.in_(expired)))


async def live_key(session: AsyncSession, key_id: uuid.UUID) -> Any:
    """The API key with this id, unless it is revoked (or gone)."""
    query = sa.select(keys_t.c.id, keys_t.c.name, keys_t.c.role).where(
        keys_t.c.id == key_id, keys_t.c.revoked_at.is_(None)
    )
    return (await session.execute(query)).first()


# -- reads ----------------------------------------------------------------------------------------

data_as_stored = sa.func.coalesce(
    sa.cast(records_t.c.data_text, sa.Text), sa.cast(records_t.c.data, sa.Text)
)


def _previous_data() -> sa.ScalarSelect[Any]:
    """The `data` of the record just before this one about the same object (one index probe on
    (object_id, seq)): what a change is measured against."""
    earlier = records_t.alias("earlier")
    return (
        sa.select(sa.cast(earlier.c.data, sa.Text))
        .where(earlier.c.object_id == records_t.c.object_id, earlier.c.seq < records_t.c.seq)
        .order_by(earlier.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )


def _record_columns() -> list[Any]:
    columns = [c for c in records_t.c if c.name not in ("data_text", "data", "xact_id")]
    return [
        *columns,
        data_as_stored.label("data_as_stored"),
        _previous_data().label("previous_data"),
    ]


async def account_records(
    session: AsyncSession, account_id: uuid.UUID, *, before_seq: int | None, limit: int
) -> Sequence[sa.Row[Any]]:
    """Audit records of the account and of every transfer that names it, newest first; keyset
    pages on seq. A reversal's own `transfer.reverse` record is kept under the original
    transfer, which names the same two accounts, so it is found too."""
    touching = sa.select(sa.cast(transfers_t.c.id, sa.Text)).where(
        sa.or_(
            transfers_t.c.debit_account_id == account_id,
            transfers_t.c.credit_account_id == account_id,
        )
    )
    query = (
        sa.select(*_record_columns())
        .where(
            sa.or_(records_t.c.object_id == str(account_id), records_t.c.object_id.in_(touching))
        )
        .order_by(records_t.c.seq.desc())
        .limit(limit)
    )
    if before_seq is not None:
        query = query.where(records_t.c.seq < before_seq)
    return (await session.execute(query)).all()


async def previous_data_of(session: AsyncSession, seqs: list[int]) -> dict[int, str | None]:
    """For records by seq: the `data` of the record before each about the same object."""
    if not seqs:
        return {}
    query = sa.select(records_t.c.seq, _previous_data().label("previous_data")).where(
        records_t.c.seq.in_(seqs)
    )
    return {row.seq: row.previous_data for row in await session.execute(query)}


async def chart_entries(
    session: AsyncSession, account_id: uuid.UUID, points_max: int
) -> list[tuple[int, int, dt.datetime]]:
    """The account's latest `points_max` entries as (sequence, balance_after, posted_at), oldest
    first."""
    query = (
        sa.select(entries_t.c.sequence, entries_t.c.balance_after, entries_t.c.posted_at)
        .where(entries_t.c.account_id == account_id)
        .order_by(entries_t.c.sequence.desc())
        .limit(points_max)
    )
    rows = (await session.execute(query)).all()
    return [(r.sequence, r.balance_after, r.posted_at) for r in reversed(rows)]
