"""What `ledger verify` remembers between runs (migration 0022): each successful run's bounds,
and per account and per monitor how far that run checked it. `ledger verify --since-last` reads
only what lies beyond them.

Anyone with the service's database role can write these rows, so they are never taken on their
word: each run first checks them against the data they describe (see `verify_runs.py`)."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ledger.core.db import Base

VERIFY_RUN_KINDS = ("full", "incremental")


class VerifyRun(Base):
    """One successful run. `entries_settled` / `events_settled`: every entry / outbox id at or
    below it had committed (or rolled back) before the run's snapshot; `entries_seen`: the
    highest entry id that snapshot held. `full_run_id`: the full run whose result an
    incremental run carries forward (a full run names itself)."""

    __tablename__ = "verify_runs"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(always=False), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(11))
    full_run_id: Mapped[int]
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime]
    entries_settled: Mapped[int]
    entries_seen: Mapped[int]
    events_settled: Mapped[int]
    entries_checked: Mapped[int]
    transfers_checked: Mapped[int]
    events_checked: Mapped[int]
    accounts_checked: Mapped[int]

    __table_args__ = (
        sa.CheckConstraint("kind IN ('full', 'incremental')", name="kind"),
        sa.CheckConstraint("full_run_id <= id", name="full_run_before"),
    )


class VerifyAccountMark(Base):
    """How far the last run checked one account: its events up to `version`, its entries up to
    `entry_sequence`, whose sums were `posted_debits` / `posted_credits` (so the running balance
    there) and the last of which was posted at `last_posted_at`."""

    __tablename__ = "verify_account_marks"

    account_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int]
    entry_sequence: Mapped[int]
    posted_debits: Mapped[int]
    posted_credits: Mapped[int]
    last_posted_at: Mapped[dt.datetime | None]
    run_id: Mapped[int]


class VerifyMonitorMark(Base):
    """How far the last run checked one balance monitor's events: up to `trigger_count`."""

    __tablename__ = "verify_monitor_marks"

    monitor_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    trigger_count: Mapped[int]
    run_id: Mapped[int]
