"""Every SQL statement of the audit trail: sealing, verification and the reviewer's reads.

Functions take an `Executor`: the sealer works on one long-lived connection (it holds a
session-level advisory lock on it), the HTTP API and the CLI on sessions."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ledger.audit.chain import SealLink
from ledger.audit.models import AuditRecord, AuditSeal
from ledger.core.locks import SINGLETON_KEY, LockClass

Executor = AsyncSession | AsyncConnection

records_t = cast(sa.Table, AuditRecord.__table__)
seals_t = cast(sa.Table, AuditSeal.__table__)

# The one active sealer's session lock (ledger/core/locks.py).
SEALER_LOCK = {"lock_class": int(LockClass.AUDIT_SEALER), "key": SINGLETON_KEY}


# -- sealer ---------------------------------------------------------------------------------------


async def try_lead(conn: AsyncConnection, application_name: str, idle_timeout_ms: int) -> bool:
    """Try to become the active sealer. The lock is session-level: it lasts as long as this
    connection, so a sealer that dies (or loses its connection) hands over at once, and one that
    hangs loses the connection after `idle_timeout_ms` without a statement."""
    await conn.execute(
        sa.text(
            "SELECT set_config('application_name', :name, false), "
            "set_config('idle_session_timeout', :idle, false), "
            "set_config('idle_in_transaction_session_timeout', :idle, false)"
        ),
        {"name": application_name, "idle": str(idle_timeout_ms)},
    )
    got = (
        await conn.execute(sa.text("SELECT pg_try_advisory_lock(:lock_class, :key)"), SEALER_LOCK)
    ).scalar_one()
    return bool(got)


async def sealer_clock(ex: Executor) -> tuple[int, dt.datetime]:
    """(xmin of a snapshot taken now, the database clock). Every transaction with an id below that
    xmin has committed or aborted, so its audit records are visible to any later statement."""
    row = (
        await ex.execute(
            sa.text(
                "SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint AS horizon, "
                "clock_timestamp() AS now"
            )
        )
    ).one()
    return int(row.horizon), row.now


@dataclass(frozen=True, slots=True)
class ChainHead:
    seq: int
    hash: str
    sealed_at: dt.datetime


async def chain_head(ex: Executor) -> ChainHead | None:
    row = (
        await ex.execute(
            sa.select(seals_t.c.seq, seals_t.c.hash, seals_t.c.sealed_at)
            .order_by(seals_t.c.seq.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else ChainHead(row.seq, row.hash, row.sealed_at)


def _not_sealed() -> sa.ColumnElement[bool]:
    return ~sa.exists().where(seals_t.c.record_id == records_t.c.id)


async def unsealed_records(
    ex: Executor, *, horizon: int, after_seq: int, limit: int
) -> Sequence[sa.Row[Any]]:
    """Visible records not yet sealed, written by a transaction at or after `horizon`, in seq
    order from `after_seq` on. Records of older transactions were sealed by an earlier pass."""
    query = (
        sa.select(records_t)
        .where(records_t.c.xact_id >= horizon)
        .where(records_t.c.seq > after_seq)
        .where(_not_sealed())
        .order_by(records_t.c.seq)
        .limit(limit)
    )
    return (await ex.execute(query)).all()


async def insert_seals(ex: Executor, links: Sequence[SealLink]) -> None:
    """One statement per batch (arrays unnested server-side): one round trip, not one per row."""
    if not links:
        return
    await ex.execute(
        sa.text(
            "INSERT INTO audit_seals (seq, record_id, prev_hash, hash, sealed_at) "
            "SELECT s.seq, s.record_id, s.prev_hash, s.hash, s.sealed_at "
            "  FROM unnest(CAST(:seqs AS bigint[]), CAST(:record_ids AS uuid[]), "
            "              CAST(:prev_hashes AS text[]), CAST(:hashes AS text[]), "
            "              CAST(:sealed_ats AS timestamptz[])) "
            "       AS s(seq, record_id, prev_hash, hash, sealed_at)"
        ),
        {
            "seqs": [item.seq for item in links],
            "record_ids": [item.record_id for item in links],
            "prev_hashes": [item.prev_hash for item in links],
            "hashes": [item.hash for item in links],
            "sealed_ats": [item.sealed_at for item in links],
        },
    )


# -- verification ---------------------------------------------------------------------------------


async def use_snapshot(ex: Executor) -> None:
    """One consistent, read-only snapshot for the whole verification (first statement only)."""
    await ex.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))


async def seals_with_records(ex: Executor, *, after_seq: int, limit: int) -> Sequence[sa.Row[Any]]:
    """Seals in chain order, each with its record's columns (NULL when the record is gone)."""
    query = (
        sa.select(
            seals_t.c.seq.label("seal_seq"),
            seals_t.c.record_id.label("seal_record_id"),
            seals_t.c.prev_hash.label("seal_prev_hash"),
            seals_t.c.hash.label("seal_hash"),
            seals_t.c.sealed_at.label("seal_sealed_at"),
            *records_t.c,
        )
        .select_from(seals_t.outerjoin(records_t, records_t.c.id == seals_t.c.record_id))
        .where(seals_t.c.seq > after_seq)
        .order_by(seals_t.c.seq)
        .limit(limit)
    )
    return (await ex.execute(query)).all()


async def unsealed_count(ex: Executor) -> int:
    query = sa.select(sa.func.count()).select_from(records_t).where(_not_sealed())
    return int((await ex.execute(query)).scalar_one())


async def first_unsealed_before(ex: Executor, cutoff: dt.datetime) -> uuid.UUID | None:
    """The first (by seq) unsealed record written before `cutoff`."""
    query = (
        sa.select(records_t.c.id)
        .where(records_t.c.at < cutoff)
        .where(_not_sealed())
        .order_by(records_t.c.seq)
        .limit(1)
    )
    found = (await ex.execute(query)).scalar_one_or_none()
    return found if isinstance(found, uuid.UUID) else None


async def latest_sealed_at(ex: Executor) -> dt.datetime | None:
    value = (await ex.execute(sa.select(sa.func.max(seals_t.c.sealed_at)))).scalar_one()
    return value if isinstance(value, dt.datetime) else None


# -- reviewers' reads -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordFilter:
    actor_id: uuid.UUID | None = None
    actor_name: str | None = None
    object_id: str | None = None
    action: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None


async def list_records(
    ex: Executor, where: RecordFilter, *, after_seq: int | None, limit: int
) -> Sequence[sa.Row[Any]]:
    """Records oldest first (by seq), filtered; keyset pagination on seq."""
    query = sa.select(records_t).order_by(records_t.c.seq).limit(limit)
    if after_seq is not None:
        query = query.where(records_t.c.seq > after_seq)
    if where.actor_id is not None:
        query = query.where(records_t.c.actor_id == where.actor_id)
    if where.actor_name is not None:
        query = query.where(records_t.c.actor_name == where.actor_name)
    if where.object_id is not None:
        query = query.where(records_t.c.object_id == where.object_id)
    if where.action is not None:
        query = query.where(records_t.c.action == where.action)
    if where.start is not None:
        query = query.where(records_t.c.at >= where.start)
    if where.end is not None:
        query = query.where(records_t.c.at < where.end)
    return (await ex.execute(query)).all()


async def reversal_records(
    ex: Executor, original_id: str, reversal_id: str
) -> Sequence[sa.Row[Any]]:
    """The `transfer.reverse` record (kept under the original transfer) that made a reversal."""
    query = (
        sa.select(records_t)
        .where(records_t.c.object_id == original_id)
        .where(records_t.c.action == "transfer.reverse")
        .where(records_t.c.data["result"]["id"].astext == reversal_id)
        .order_by(records_t.c.seq)
    )
    return (await ex.execute(query)).all()
