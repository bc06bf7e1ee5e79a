"""`ledger verify`, full or since the last run, and what each successful run records.

A run:
1. takes the verify lock on a session of its own (one run records at a time; a run that finds
   it taken, or a standby, still checks and records nothing);
2. when it records, reads the highest entry and outbox ids handed out so far, then waits until
   every transaction open at that moment has ended: every id at or below those bounds has then
   committed or rolled back, so the next run may start just above them and miss nothing that
   commits late (ids are handed out before commit, in another order than commits); if they
   do not end within VERIFY_SETTLE_WAIT_MAX_SECONDS, it checks and records nothing;
3. checks in one REPEATABLE READ snapshot: everything (full), or, since the last run, the
   entries and events above its bounds, extending its per-account marks, after checking the
   marks against the data they describe;
4. when every invariant holds, records the run and the marks from that same snapshot; when a
   full run finds a violation, forgets every recorded run, so that no later incremental run
   carries forward a result the full run no longer gives.

What the incremental run cannot see, by design: a row rewritten or inserted at or below the
last run's bounds (say by someone holding the service's database role). Entries are
append-only and guarded by triggers, but a superuser can switch those off; only a full run
reads every row again, so run one regularly (nightly) beside frequent incremental runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.core import limits
from ledger.core.locks import SINGLETON_KEY, LockClass
from ledger.posting.incremental_invariants import INCREMENTAL_CHECKS, MARK_CHECKS
from ledger.posting.invariants import find_violations


@dataclass(frozen=True)
class Settled:
    """Bounds below which every id had committed or rolled back before the snapshot."""

    entries: int
    events: int


@dataclass(frozen=True)
class LastRun:
    id: int
    kind: str
    full_run_id: int
    started_at: dt.datetime
    finished_at: dt.datetime
    entries_settled: int
    entries_seen: int
    events_settled: int
    full_started_at: dt.datetime | None


@dataclass
class Counts:
    entries: int = 0
    transfers: int = 0
    events: int = 0
    accounts: int = 0


@dataclass
class VerifyOutcome:
    """`violations`: one line per broken invariant; `refusals`: why the run could not check
    (recorded marks that cannot be true); `notes`: what was checked and recorded, for stderr."""

    violations: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.refusals


def _stamp(at: dt.datetime | None) -> str:
    return "?" if at is None else at.astimezone(dt.UTC).isoformat(timespec="seconds")


async def verify_ledger(engine: AsyncEngine, *, since_last: bool) -> VerifyOutcome:
    """Verify the ledger (everything, or what changed since the last recorded run) and record
    the run when every invariant holds and this process may record."""
    outcome = VerifyOutcome()
    began = time.monotonic()
    async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as session:
        recording = await _take_verify_lock(session, outcome)
        # The bounds serve only the record (and a standby hands out no transaction id).
        settled = await _settle(session, outcome) if recording else None
        settled_after = time.monotonic() - began
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                await conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
                last = await _last_run(conn) if since_last else None
                if since_last and last is None:
                    outcome.notes.append("no recorded run yet: a full run instead")
                if last is None:
                    counts = await _full(conn, outcome)
                else:
                    counts = await _since(conn, last, outcome)
                if outcome.ok and settled is not None:
                    run_id = await _record(conn, last, settled, counts)
                    outcome.notes.append(f"recorded as run {run_id}")
                elif last is None and outcome.violations and settled is not None:
                    await _forget_runs(conn, outcome)
    outcome.notes.append(
        f"took {time.monotonic() - began:.2f} s ({settled_after:.2f} s of it waiting for the"
        " transactions open when it began)"
    )
    return outcome


async def _forget_runs(conn: AsyncConnection, outcome: VerifyOutcome) -> None:
    """A full run found violations: nothing recorded before it may be carried forward, so
    `--since-last` runs in full (and names them) until a full run passes."""
    for table in ("verify_account_marks", "verify_monitor_marks", "verify_runs"):
        await conn.execute(sa.text(f"DELETE FROM {table}"))
    outcome.notes.append(
        "recorded runs forgotten: until a full run passes, --since-last runs in full"
    )


async def _take_verify_lock(session: AsyncConnection, outcome: VerifyOutcome) -> bool:
    standby = (await session.execute(sa.text("SELECT pg_is_in_recovery()"))).scalar_one()
    if standby:
        outcome.notes.append("connected to a standby: the run is not recorded")
        return False
    taken = (
        await session.execute(
            sa.text("SELECT pg_try_advisory_lock(:c, :k)"),
            {"c": int(LockClass.VERIFY_RUN), "k": SINGLETON_KEY},
        )
    ).scalar_one()
    if not taken:
        outcome.notes.append("another ledger verify is recording its run: this one is not")
    return bool(taken)


async def _settle(session: AsyncConnection, outcome: VerifyOutcome) -> Settled | None:
    row = (
        await session.execute(
            sa.text(
                "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('entries', 'id')),"
                " 0), coalesce(pg_sequence_last_value("
                "pg_get_serial_sequence('outbox_events', 'id')), 0)"
            )
        )
    ).one()
    settled = Settled(entries=int(row[0]), events=int(row[1]))
    # Every transaction that holds an id at or below those bounds has a transaction id below
    # this one (the service locks its rows, which assigns one, before it inserts); once the
    # oldest transaction still running is younger, each of them has ended. (A snapshot's own
    # in-progress list would not do: it leaves out transactions newer than the last to end.)
    upper = (await session.execute(sa.text("SELECT pg_current_xact_id()::text"))).scalar_one()
    oldest_running = sa.text(
        "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= CAST(:upper AS xid8),"
        " (SELECT string_agg(pid::text, ', ') FROM pg_stat_activity"
        "   WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid())"
    )
    deadline = time.monotonic() + limits.VERIFY_SETTLE_WAIT_MAX_SECONDS
    while True:
        ended, pids = (await session.execute(oldest_running, {"upper": upper})).one()
        if ended:
            return settled
        if time.monotonic() > deadline:
            outcome.notes.append(
                "transactions open before the run did not end within"
                f" {limits.VERIFY_SETTLE_WAIT_MAX_SECONDS} s (backends {pids}): the run checks"
                " but is not recorded"
            )
            return None
        await asyncio.sleep(limits.VERIFY_SETTLE_POLL_SECONDS)


async def _last_run(conn: AsyncConnection) -> LastRun | None:
    row = (
        await conn.execute(
            sa.text(
                "SELECT r.id, r.kind, r.full_run_id, r.started_at, r.finished_at,"
                " r.entries_settled, r.entries_seen, r.events_settled, f.started_at"
                " FROM verify_runs r LEFT JOIN verify_runs f"
                " ON f.id = r.full_run_id AND f.kind = 'full'"
                " ORDER BY r.id DESC LIMIT 1"
            )
        )
    ).one_or_none()
    return None if row is None else LastRun(*row)


async def _violations(
    conn: AsyncConnection, checks: list[tuple[str, str]], params: dict[str, Any]
) -> list[str]:
    lines: list[str] = []
    for rule, query in checks:
        for subject, detail in (await conn.execute(sa.text(query), params)).all():
            lines.append(f"{rule}: {subject}: {detail}")
    return lines


async def _full(conn: AsyncConnection, outcome: VerifyOutcome) -> Counts:
    outcome.violations += await find_violations(conn)
    row = (
        await conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM entries), (SELECT count(*) FROM transfers),"
                " (SELECT count(*) FROM outbox_events), (SELECT count(*) FROM accounts)"
            )
        )
    ).one()
    counts = Counts(*(int(n) for n in row))
    outcome.notes.append(
        f"full run: checked {counts.transfers} transfers, {counts.entries} entries,"
        f" {counts.events} events and {counts.accounts} accounts"
    )
    return counts


async def _since(conn: AsyncConnection, last: LastRun, outcome: VerifyOutcome) -> Counts:
    params = {
        "e_from": last.entries_settled,
        "e_seen": last.entries_seen,
        "o_from": last.events_settled,
        "run_id": last.id,
    }
    outcome.refusals += await _check_bounds(conn, last)
    if not outcome.refusals:
        outcome.refusals += [
            f"verify marks: {line}" for line in await _violations(conn, MARK_CHECKS, params)
        ]
    if outcome.refusals:
        outcome.refusals.append(
            f"verify marks: the marks of run {last.id} do not describe the data;"
            " nothing was checked beyond them: run a full `ledger verify`"
        )
        return Counts()
    outcome.violations += await _violations(conn, INCREMENTAL_CHECKS, params)
    row = (
        await conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM entries WHERE id > :e_from),"
                " (SELECT count(DISTINCT transfer_id) FROM entries WHERE id > :e_from),"
                " (SELECT count(*) FROM outbox_events WHERE id > :o_from),"
                " (SELECT count(*) FROM accounts a"
                "   LEFT JOIN verify_account_marks m ON m.account_id = a.id"
                "  WHERE m.account_id IS NULL OR m.version <> a.version)"
            ),
            params,
        )
    ).one()
    counts = Counts(*(int(n) for n in row))
    outcome.notes.append(
        f"checked {counts.transfers} transfers, {counts.entries} entries, {counts.events} events"
        f" and {counts.accounts} changed accounts since run {last.id} of"
        f" {_stamp(last.started_at)} (entries above id {last.entries_settled}, events above id"
        f" {last.events_settled}); carried forward from full run {last.full_run_id} of"
        f" {_stamp(last.full_started_at)}: rows at or below those ids are read again only by a"
        " full run"
    )
    return counts


async def _check_bounds(conn: AsyncConnection, last: LastRun) -> list[str]:
    """The last run's own bounds against the data: ids only grow, entries are never deleted."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('entries', 'id')),"
                " 0), (SELECT coalesce(max(id), 0) FROM entries),"
                " coalesce(pg_sequence_last_value(pg_get_serial_sequence('outbox_events', 'id')),"
                " 0), now()"
            )
        )
    ).one()
    entries_handed_out, entries_max, events_handed_out, now = row
    lines: list[str] = []
    if last.entries_settled > entries_handed_out or last.entries_seen > entries_max:
        lines.append(
            f"verify marks: run {last.id} claims entries up to id"
            f" {max(last.entries_settled, last.entries_seen)}; the highest entry id is"
            f" {entries_max} (handed out: {entries_handed_out})"
        )
    if last.events_settled > events_handed_out:
        lines.append(
            f"verify marks: run {last.id} claims events up to id {last.events_settled};"
            f" the highest outbox id handed out is {events_handed_out}"
        )
    if not (last.started_at <= last.finished_at <= now):
        lines.append(
            f"verify marks: run {last.id} started {_stamp(last.started_at)} and finished"
            f" {_stamp(last.finished_at)}, not between then and now ({_stamp(now)})"
        )
    if last.full_started_at is None or (last.kind == "full") != (last.full_run_id == last.id):
        lines.append(
            f"verify marks: run {last.id} ({last.kind}) names full run {last.full_run_id},"
            " which is not a recorded full run"
        )
    return lines


async def _record(
    conn: AsyncConnection, last: LastRun | None, settled: Settled, counts: Counts
) -> int:
    """Record the run and move the marks to what this snapshot holds (checked: every invariant
    held), with the bounds read before the snapshot."""
    run_id = int(
        (
            await conn.execute(
                sa.text("SELECT nextval(pg_get_serial_sequence('verify_runs', 'id'))")
            )
        ).scalar_one()
    )
    params = {
        "id": run_id,
        "kind": "full" if last is None else "incremental",
        "full_run_id": run_id if last is None else last.full_run_id,
        "e_settled": settled.entries,
        "o_settled": settled.events,
        "entries": counts.entries,
        "transfers": counts.transfers,
        "events": counts.events,
        "accounts": counts.accounts,
        "e_from": 0 if last is None else last.entries_settled,
    }
    await conn.execute(
        sa.text(
            "INSERT INTO verify_runs (id, kind, full_run_id, started_at, finished_at,"
            " entries_settled, entries_seen, events_settled, entries_checked, transfers_checked,"
            " events_checked, accounts_checked)"
            " SELECT :id, :kind, :full_run_id, now(), clock_timestamp(), :e_settled,"
            " (SELECT coalesce(max(id), 0) FROM entries), :o_settled, :entries, :transfers,"
            " :events, :accounts"
        ),
        params,
    )
    if last is None:
        await _record_all_marks(conn, params)
    else:
        await _record_changed_marks(conn, params)
    return run_id


async def _record_all_marks(conn: AsyncConnection, params: dict[str, Any]) -> None:
    await conn.execute(sa.text("DELETE FROM verify_account_marks"))
    await conn.execute(
        sa.text(
            "INSERT INTO verify_account_marks (account_id, version, entry_sequence,"
            " posted_debits, posted_credits, last_posted_at, run_id)"
            " SELECT a.id, a.version, coalesce(e.last_sequence, 0), a.posted_debits,"
            " a.posted_credits, e.last_posted_at, :id"
            " FROM accounts a LEFT JOIN (SELECT account_id, max(sequence) AS last_sequence,"
            " max(posted_at) AS last_posted_at FROM entries GROUP BY account_id) e"
            " ON e.account_id = a.id"
        ),
        params,
    )
    await conn.execute(sa.text("DELETE FROM verify_monitor_marks"))
    await conn.execute(
        sa.text(
            "INSERT INTO verify_monitor_marks (monitor_id, trigger_count, run_id)"
            " SELECT id, trigger_count, :id FROM account_monitors"
        ),
        params,
    )


async def _record_changed_marks(conn: AsyncConnection, params: dict[str, Any]) -> None:
    await conn.execute(
        sa.text(
            "INSERT INTO verify_account_marks (account_id, version, entry_sequence,"
            " posted_debits, posted_credits, last_posted_at, run_id)"
            " SELECT a.id, a.version, coalesce(f.last_sequence, m.entry_sequence, 0),"
            " a.posted_debits, a.posted_credits, coalesce(f.last_posted_at, m.last_posted_at), :id"
            " FROM accounts a"
            " LEFT JOIN verify_account_marks m ON m.account_id = a.id"
            " LEFT JOIN (SELECT e.account_id, max(e.sequence) AS last_sequence,"
            "            max(e.posted_at) AS last_posted_at"
            "       FROM entries e LEFT JOIN verify_account_marks k ON k.account_id = e.account_id"
            "      WHERE e.id > :e_from AND e.sequence > coalesce(k.entry_sequence, 0)"
            "      GROUP BY e.account_id) f ON f.account_id = a.id"
            " WHERE m.account_id IS NULL OR m.version <> a.version OR f.account_id IS NOT NULL"
            " ON CONFLICT (account_id) DO UPDATE SET version = excluded.version,"
            " entry_sequence = excluded.entry_sequence, posted_debits = excluded.posted_debits,"
            " posted_credits = excluded.posted_credits,"
            " last_posted_at = excluded.last_posted_at, run_id = excluded.run_id"
        ),
        params,
    )
    await conn.execute(
        sa.text(
            "INSERT INTO verify_monitor_marks (monitor_id, trigger_count, run_id)"
            " SELECT mo.id, mo.trigger_count, :id FROM account_monitors mo"
            " LEFT JOIN verify_monitor_marks k ON k.monitor_id = mo.id"
            " WHERE k.monitor_id IS NULL OR k.trigger_count <> mo.trigger_count"
            " ON CONFLICT (monitor_id) DO UPDATE SET trigger_count = excluded.trigger_count,"
            " run_id = excluded.run_id"
        ),
        params,
    )
