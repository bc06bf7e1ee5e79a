"""Every SQL statement of the audit trail: sealing, verification and the reviewer's reads.

Functions take an `Executor`: the sealer works on one long-lived connection of its own (it holds a
session-level advisory lock on it), the HTTP API and the CLI on sessions."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ledger.audit.chain import PassFacts, SealLink
from ledger.audit.models import AuditRecord, AuditSeal
from ledger.core.locks import SINGLETON_KEY, LockClass

Executor = AsyncSession | AsyncConnection

records_t = cast(sa.Table, AuditRecord.__table__)
seals_t = cast(sa.Table, AuditSeal.__table__)

# `data` as the seal chain hashes it and the trail parses it: the jsonb column, or, for a record
# written since migration 0027_audit_one_copy, which keeps only the writer's text, that text
# parsed as jsonb: the value the column would have held, parsed from the same text.
record_data_value = sa.func.coalesce(
    records_t.c.data, sa.cast(records_t.c.data_text, JSONB), type_=JSONB
)
record_data = record_data_value.label("data")


def record_columns(*, parsed: bool = True) -> list[Any]:
    """The audit_records columns, `data` as `record_data`, without `data_text` (its text is
    `data_as_stored`, selected where wanted). `parsed=False`: `data` is NULL, for readers that
    answer or hash the text as stored and never look at the parsed value (a jsonb parse in
    PostgreSQL and a JSON parse here per record saved)."""
    data = record_data if parsed else sa.null().label("data")
    return [
        data if column.name == "data" else column
        for column in records_t.c
        if column.name != "data_text"
    ]


# The one active sealer's session lock (ledger/core/locks.py).
SEALER_LOCK = {"lock_class": int(LockClass.AUDIT_SEALER), "key": SINGLETON_KEY}


# -- sealer ---------------------------------------------------------------------------------------


async def try_lead(conn: AsyncConnection, application_name: str, idle_timeout_ms: int) -> bool:
    """Try to become the active sealer. The lock is session-level: it lasts as long as this
    connection, which is the sealer's alone (never a pool's), so a sealer that dies, or drops its
    connection after an error, hands over at once, and one that hangs loses the connection after
    `idle_timeout_ms` without a statement."""
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


async def snapshot_bounds(ex: Executor) -> tuple[int, int]:
    """(xmin, xmax) of a snapshot taken now. Every transaction below xmin has committed or
    aborted, so its audit records are visible to any later statement; no transaction id at or
    above xmax has ended yet (an id above it is one this database has not reached: a chain
    copied from another cluster by dump and restore carries such ids)."""
    row = (
        await ex.execute(
            sa.text(
                "SELECT (pg_snapshot_xmin(s)::text)::bigint AS xmin, "
                "(pg_snapshot_xmax(s)::text)::bigint AS xmax "
                "FROM pg_current_snapshot() AS s"
            )
        )
    ).one()
    return int(row.xmin), int(row.xmax)


async def pass_facts(ex: Executor, horizon_xid: int) -> tuple[PassFacts, dt.datetime]:
    """The facts a pass's seals carry, and their `sealed_at`; call it before the pass's first
    write. This transaction takes its id now, and ids are handed out in increasing order, so every
    transaction with a larger id began after it; the transaction's start is earlier still."""
    row = (
        await ex.execute(
            sa.text(
                "SELECT (pg_current_xact_id()::text)::bigint + 1 AS next_xid, "
                "transaction_timestamp() AS at"
            )
        )
    ).one()
    return PassFacts(horizon_xid=horizon_xid, next_xid=int(row.next_xid)), row.at


@dataclass(frozen=True, slots=True)
class ChainHead:
    seq: int
    hash: str
    sealed_at: dt.datetime
    facts: PassFacts | None  # None: sealed before migration 0007


async def chain_head(ex: Executor) -> ChainHead | None:
    row = (
        await ex.execute(
            sa.select(
                seals_t.c.seq,
                seals_t.c.hash,
                seals_t.c.sealed_at,
                seals_t.c.horizon_xid,
                seals_t.c.next_xid,
            )
            .order_by(seals_t.c.seq.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    facts = _facts(row.horizon_xid, row.next_xid)
    return ChainHead(row.seq, row.hash, row.sealed_at, facts)


def _facts(horizon_xid: int | None, next_xid: int | None) -> PassFacts | None:
    if horizon_xid is None or next_xid is None:
        return None
    return PassFacts(horizon_xid=horizon_xid, next_xid=next_xid)


def _not_sealed() -> sa.ColumnElement[bool]:
    return ~sa.exists().where(seals_t.c.record_id == records_t.c.id)


def _not_sealed_probe() -> sa.ColumnElement[bool]:
    """The same test as `_not_sealed`, as one index probe per candidate record. The planner
    turns NOT EXISTS into a hash anti-join that reads every seal ever written, once per call:
    the sealer's query then cost in proportion to the whole chain (11 ms per pass at 30,000
    seals, 40 ms under batch load) where a pass looks at a few hundred recent records. The
    LIMIT keeps the subquery correlated, so the cost follows the candidates only."""
    first_seal = (
        sa.select(seals_t.c.seq)
        .where(seals_t.c.record_id == records_t.c.id)
        .limit(1)
        .scalar_subquery()
    )
    return first_seal.is_(None)


async def unsealed_records(
    ex: Executor, *, horizon: int, after_seq: int, limit: int
) -> Sequence[sa.Row[Any]]:
    """Visible records not yet sealed, written by a transaction at or after `horizon`, in seq
    order from `after_seq` on. Records of older transactions were sealed by an earlier pass.
    Each row also has `data_as_stored`, which the record's Merkle leaf covers."""
    # `data_text` as text only (`data_as_stored`): parsing it too was a JSON parse per record
    # that nothing used.
    query = (
        sa.select(*record_columns(), data_as_stored)
        .where(records_t.c.xact_id >= horizon)
        .where(records_t.c.seq > after_seq)
        .where(_not_sealed_probe())
        .order_by(records_t.c.seq)
        .limit(limit)
    )
    # A select of a column list is typed by its arity; the rows are the same Row.
    return cast(Sequence[sa.Row[Any]], (await ex.execute(query)).all())


async def insert_seals(ex: Executor, links: Sequence[SealLink]) -> None:
    """One statement per batch (arrays unnested server-side): one round trip, not one per row."""
    if not links:
        return
    await ex.execute(
        sa.text(
            "INSERT INTO audit_seals (seq, record_id, prev_hash, hash, sealed_at, horizon_xid, "
            "                         next_xid) "
            "SELECT s.seq, s.record_id, s.prev_hash, s.hash, s.sealed_at, s.horizon_xid, "
            "       s.next_xid "
            "  FROM unnest(CAST(:seqs AS bigint[]), CAST(:record_ids AS uuid[]), "
            "              CAST(:prev_hashes AS text[]), CAST(:hashes AS text[]), "
            "              CAST(:sealed_ats AS timestamptz[]), CAST(:horizons AS bigint[]), "
            "              CAST(:next_xids AS bigint[])) "
            "       AS s(seq, record_id, prev_hash, hash, sealed_at, horizon_xid, next_xid)"
        ),
        {
            "seqs": [item.seq for item in links],
            "record_ids": [item.record_id for item in links],
            "prev_hashes": [item.prev_hash for item in links],
            "hashes": [item.hash for item in links],
            "sealed_ats": [item.sealed_at for item in links],
            "horizons": [item.facts.horizon_xid for item in links],
            "next_xids": [item.facts.next_xid for item in links],
        },
    )


# -- verification ---------------------------------------------------------------------------------


async def use_snapshot(ex: Executor) -> None:
    """One consistent, read-only snapshot for the whole verification (first statement only)."""
    await ex.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))


def _witness(up_to_seal_seq: sa.ColumnElement[int] | None = None) -> sa.ScalarSelect[Any]:
    """`sealed_at` of the latest sealer pass (up to a seal, when given) that ran before the
    record's transaction began (its `next_xid` is at most the record's `xact_id`): one index
    probe on (next_xid, seq). Passes only move forward, so this is also the latest such time."""
    passes = seals_t.alias("witness")
    query = sa.select(passes.c.sealed_at).where(passes.c.next_xid <= records_t.c.xact_id)
    if up_to_seal_seq is not None:
        query = query.where(passes.c.seq <= up_to_seal_seq)
    return query.order_by(passes.c.next_xid.desc(), passes.c.seq.desc()).limit(1).scalar_subquery()


async def seals_with_records(
    ex: Executor, *, after_seq: int, limit: int, grace: dt.timedelta
) -> Sequence[sa.Row[Any]]:
    """Seals in chain order, each with its record's columns (NULL when the record is gone), and
    `witnessed_at`: for a record sealed more than `grace` after its `at` only (the others cannot
    fail the check, and need no probe), the latest earlier pass that ran before its transaction
    began (see verify.py)."""
    late = records_t.c.at + sa.literal(grace, sa.Interval) < seals_t.c.sealed_at
    query = (
        sa.select(
            seals_t.c.seq.label("seal_seq"),
            seals_t.c.record_id.label("seal_record_id"),
            seals_t.c.prev_hash.label("seal_prev_hash"),
            seals_t.c.hash.label("seal_hash"),
            seals_t.c.sealed_at.label("seal_sealed_at"),
            seals_t.c.horizon_xid.label("seal_horizon_xid"),
            seals_t.c.next_xid.label("seal_next_xid"),
            sa.case((late, _witness(seals_t.c.seq)), else_=None).label("witnessed_at"),
            # The exact text answered to reviewers (migration 0009) must say what the sealed
            # jsonb says: compared as jsonb, where number spellings of one value are equal.
            # A record with one copy (0027) has nothing to disagree with.
            sa.case(
                (records_t.c.data_text.is_(None), sa.true()),
                (records_t.c.data.is_(None), sa.true()),
                else_=sa.cast(records_t.c.data_text, JSONB) == records_t.c.data,
            ).label("data_text_matches"),
            *record_columns(),
        )
        .select_from(seals_t.outerjoin(records_t, records_t.c.id == seals_t.c.record_id))
        .where(seals_t.c.seq > after_seq)
        .order_by(seals_t.c.seq)
        .limit(limit)
    )
    return (await ex.execute(query)).all()


def seal_facts(row: sa.Row[Any]) -> PassFacts | None:
    """The pass facts of a `seals_with_records` row (None on a seal made before 0007)."""
    return _facts(row.seal_horizon_xid, row.seal_next_xid)


async def unsealed_count(ex: Executor) -> int:
    """Every unsealed record, exactly: an anti-join of the whole trail with the whole chain (for
    verify, which reads both anyway)."""
    query = sa.select(sa.func.count()).select_from(records_t).where(_not_sealed())
    return int((await ex.execute(query)).scalar_one())


@dataclass(frozen=True, slots=True)
class Waiting:
    """Unsealed records among the newest `examined` records written at or after a horizon;
    `complete`: those were all of them, so `count` is exact (else a lower bound)."""

    count: int
    examined: int
    complete: bool


async def waiting_count(ex: Executor, *, horizon_xid: int, examine_max: int) -> Waiting:
    """The records waiting for the sealer, for the console: unsealed records whose transaction
    is at or after `horizon_xid` (the chain head's: every older record was visible to a pass
    that finished its scan, so it is sealed, or was inserted behind the service's back, which
    verify names). The newest `examine_max` such records at most (`ix_audit_records_xact_id`
    backwards), each tested by one probe of the seals' `record_id` index: the cost follows
    the sealer's window, never the trail's size."""
    candidates = (
        sa.select(records_t.c.id)
        .where(records_t.c.xact_id >= horizon_xid)
        .order_by(records_t.c.xact_id.desc())
        .limit(examine_max + 1)
        .subquery("candidates")
    )
    sealed = (  # the record_id index alone answers it (an index-only scan)
        sa.select(seals_t.c.record_id)
        .where(seals_t.c.record_id == candidates.c.id)
        .limit(1)
        .scalar_subquery()
    )
    # One candidate past the bound tells a complete count from a partial one (counted too: it
    # is a record waiting as much as the others, so the count stays a lower bound).
    query = sa.select(
        sa.func.count().filter(sealed.is_(None)).label("waiting"),
        sa.func.count().label("examined"),
    ).select_from(candidates)
    row = (await ex.execute(query)).one()
    examined = int(row.examined)
    if examined <= examine_max:
        return Waiting(int(row.waiting), examined, True)
    return Waiting(int(row.waiting), examine_max, False)


@dataclass(frozen=True, slots=True)
class Suspect:
    id: uuid.UUID
    at: dt.datetime
    xact_id: int
    witnessed_at: dt.datetime | None


async def first_inserted_unsealed(
    ex: Executor, *, horizon_xid: int | None, latest_sealed_at: dt.datetime, grace: dt.timedelta
) -> Suspect | None:
    """The first (by seq) unsealed record that no genuine write could have left unsealed: its
    transaction ended before `horizon_xid` (a finished scan covered it), or it began after a pass
    that ran more than `grace` after the record's `at`."""
    witness = _witness()
    old_time = records_t.c.at + sa.literal(grace, sa.Interval)
    inserted = sa.and_(old_time < latest_sealed_at, old_time < witness)
    if horizon_xid is not None:
        inserted = sa.or_(records_t.c.xact_id < horizon_xid, inserted)
    query = (
        sa.select(
            records_t.c.id, records_t.c.at, records_t.c.xact_id, witness.label("witnessed_at")
        )
        .where(_not_sealed())
        .where(inserted)
        .order_by(records_t.c.seq)
        .limit(1)
    )
    row = (await ex.execute(query)).first()
    return None if row is None else Suspect(row.id, row.at, row.xact_id, row.witnessed_at)


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
    request_id: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None


def stored_text(table: Any) -> Any:
    """The `data` of audit_records (or of an alias of it) as stored, unparsed: the writer's text,
    or jsonb's for records from before 0009."""
    return sa.func.coalesce(sa.cast(table.c.data_text, sa.Text), sa.cast(table.c.data, sa.Text))


data_as_stored = stored_text(records_t).label("data_as_stored")


async def list_records(
    ex: Executor,
    where: RecordFilter,
    *,
    after_seq: int | None,
    limit: int,
    parsed: bool = True,
) -> Sequence[sa.Row[Any]]:
    """Records oldest first (by seq), filtered; keyset pagination on seq. Each row also has
    `data_as_stored`, the text of its `data` as kept; `data` is NULL unless `parsed`."""
    columns = record_columns(parsed=parsed)
    query = sa.select(*columns, data_as_stored).order_by(records_t.c.seq).limit(limit)
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
    if where.request_id is not None:
        query = query.where(records_t.c.request_id == where.request_id)
    if where.start is not None:
        query = query.where(records_t.c.at >= where.start)
    if where.end is not None:
        query = query.where(records_t.c.at < where.end)
    # A select of a column list is typed by its arity; the rows are the same Row.
    return cast(Sequence[sa.Row[Any]], (await ex.execute(query)).all())


async def reversal_records(
    ex: Executor, original_id: str, reversal_id: str
) -> Sequence[sa.Row[Any]]:
    """The `transfer.reverse` record (kept under the original transfer) that made a reversal."""
    query = (
        sa.select(*record_columns())
        .where(records_t.c.object_id == original_id)
        .where(records_t.c.action == "transfer.reverse")
        .where(sa.func.jsonb_extract_path_text(record_data_value, "result", "id") == reversal_id)
        .order_by(records_t.c.seq)
    )
    return (await ex.execute(query)).all()
