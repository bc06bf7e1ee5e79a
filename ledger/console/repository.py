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
from ledger.audit.repository import data_as_stored, stored_text
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


def _previous_data() -> sa.ScalarSelect[Any]:
    """The `data` of the record just before this one about the same object (one index probe on
    (object_id, seq)): what a change is measured against."""
    earlier = records_t.alias("earlier")
    return (
        sa.select(stored_text(earlier))
        .where(earlier.c.object_id == records_t.c.object_id, earlier.c.seq < records_t.c.seq)
        .order_by(earlier.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )


def _record_columns() -> list[Any]:
    columns = [c for c in records_t.c if c.name not in ("data_text", "data", "xact_id")]
    return [
        *columns,
        data_as_stored,
        _previous_data().label("previous_data"),
    ]


# Records an account page walks newest first before it asks the indexes per transfer: this many
# per row it answers, and never fewer than the floor (as ledger/posting/metadata_query.py).
ACCOUNT_WALK_ROWS_PER_ITEM = 32
ACCOUNT_WALK_ROWS_MIN = 2048
# The only spelling `uuid::text` gives: an object id in any other can name no transfer.
_TRANSFER_ID_TEXT = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def account_records_query(
    account_id: uuid.UUID, *, before_seq: int | None, limit: int
) -> sa.Select[Any]:
    """Audit records whose `object_id` is the account's id or the id of a transfer that names
    it, below `before_seq`, newest first, `limit` of them. Two ways to the page, each cheap
    where the other is not, in one statement:

    - *walk*: the newest records below the cursor by seq (`uq_audit_records_seq` backwards),
      at most `ACCOUNT_WALK_ROWS_PER_ITEM * limit` (`ACCOUNT_WALK_ROWS_MIN` at least), each
      tested: its object id is the account's, or a transfer's naming it (one primary-key probe
      of `transfers`). A busy account fills its page here, at any size of the trail.
    - *seek*, only when the walk did not fill the page: below the last walked record, the
      account's own records and each of its transfers' (`ix_audit_records_object_id_seq`, one
      backward probe per transfer, `limit` records at most each). Its cost follows the
      account's transfers; the walk showed they are fewer than one record in
      `ACCOUNT_WALK_ROWS_PER_ITEM` here.

    The seek is gated on the walk's count (a one-time filter on the read of its CTE: when the
    walk filled the page it never runs). The union is cut to `limit` and joined back by seq."""
    account = str(account_id)
    names = sa.or_(
        transfers_t.c.debit_account_id == account_id,
        transfers_t.c.credit_account_id == account_id,
    )
    below = [] if before_seq is None else [records_t.c.seq < before_seq]
    walk_rows = max(ACCOUNT_WALK_ROWS_MIN, ACCOUNT_WALK_ROWS_PER_ITEM * limit)
    walked = (
        sa.select(records_t.c.seq, records_t.c.object_id)
        .where(*below)
        .order_by(records_t.c.seq.desc())
        .limit(walk_rows)
        .subquery("walked")
    )
    # The cast only where the text is a transfer id's spelling (CASE: never cast otherwise).
    as_transfer_id = sa.case(
        (
            walked.c.object_id.op("~")(sa.literal(_TRANSFER_ID_TEXT)),
            sa.cast(walked.c.object_id, sa.Uuid),
        ),
        else_=None,
    )
    # One primary-key probe per walked record: the LIMIT keeps the subquery correlated, where
    # EXISTS would become a hash of every transfer of the account (tens of thousands for a busy
    # one), built before the first row.
    of_a_transfer = (
        sa.select(transfers_t.c.id)
        .where(transfers_t.c.id == as_transfer_id, names)
        .limit(1)
        .scalar_subquery()
        .is_not(None)
    )
    near = (
        sa.select(walked.c.seq)
        .where(sa.or_(walked.c.object_id == account, of_a_transfer))
        .order_by(walked.c.seq.desc())
        .limit(limit)
        .cte("near")
        .prefix_with("MATERIALIZED")
    )
    near_count = sa.select(sa.func.count()).select_from(near).scalar_subquery()
    # The last walked record; NULL when fewer exist, and then nothing lies below the walk.
    walked_last = (
        sa.select(records_t.c.seq)
        .where(*below)
        .order_by(records_t.c.seq.desc())
        .offset(walk_rows - 1)
        .limit(1)
        .scalar_subquery()
    )
    own = (
        sa.select(records_t.c.seq)
        .where(records_t.c.object_id == account, records_t.c.seq < walked_last)
        .order_by(records_t.c.seq.desc())
        .limit(limit)
    )
    touching = sa.select(transfers_t.c.id).where(names).subquery("touching")
    per_transfer = (
        sa.select(records_t.c.seq)
        .where(
            records_t.c.object_id == sa.cast(touching.c.id, sa.Text),
            records_t.c.seq < walked_last,
        )
        .order_by(records_t.c.seq.desc())
        .limit(limit)
        .lateral("per_transfer")
    )
    of_transfers = sa.select(per_transfer.c.seq).select_from(touching.join(per_transfer, sa.true()))
    far = sa.union_all(own, of_transfers).cte("far").prefix_with("MATERIALIZED")
    # The gate sits on the read of `far`: a CTE runs only when read.
    seek = sa.select(far.c.seq).where(near_count < limit)
    # UNION, not UNION ALL: a record is listed once even if an account and a transfer it names
    # share an id (clients choose ids).
    found = sa.union(sa.select(near.c.seq), seek).subquery("found")
    page_seqs = sa.select(found.c.seq).order_by(found.c.seq.desc()).limit(limit)
    return (
        sa.select(*_record_columns())
        .where(records_t.c.seq.in_(page_seqs))
        .order_by(records_t.c.seq.desc())
    )


async def account_records(
    session: AsyncSession, account_id: uuid.UUID, *, before_seq: int | None, limit: int
) -> Sequence[sa.Row[Any]]:
    """Audit records of the account and of every transfer that names it, newest first; keyset
    pages on seq (`account_records_query`). A reversal's own `transfer.reverse` record is kept
    under the original transfer, which names the same two accounts, so it is found too."""
    query = account_records_query(account_id, before_seq=before_seq, limit=limit)
    return cast(Sequence[sa.Row[Any]], (await session.execute(query)).all())


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
