"""What money movement adds to a posting: balancing amounts, imported times, the period lock
and balance monitors, all decided on the state the engine holds locked.

The engine calls in at three points: `load` once its locks are held, `decide` for each new
transfer before it moves money, and `watch` / `monitor_events` around each balance change.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.bulk import BulkWriter
from ledger.core.context import WriteContext
from ledger.core.db import after_commit
from ledger.posting import events, periods
from ledger.posting import monitors as monitor_rules
from ledger.posting import movement_repository as movement_repo
from ledger.posting.balancing import balancing_amount
from ledger.posting.commands import TransferCommand
from ledger.posting.monitors import MonitorState
from ledger.posting.repository import Locked
from ledger.posting.state import AccountState, TransferState
from outbox.writer import PendingEvent

log = structlog.get_logger("ledger.posting.movement")


@dataclass(slots=True)
class MovementState:
    locked_until: dt.datetime | None = None
    monitors: dict[uuid.UUID, list[MonitorState]] = field(default_factory=dict)
    # Each account's latest entry time: read for the accounts of imported transfers, then
    # kept current as this posting writes entries.
    last_posted: dict[uuid.UUID, dt.datetime] = field(default_factory=dict)
    # (monitor, account, transfer) of each firing, logged once committed
    fired: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]] = field(default_factory=list)

    async def load(
        self, session: AsyncSession, locked: Locked, commands: Iterable[TransferCommand]
    ) -> None:
        self.locked_until = locked.locked_until
        self.monitors = locked.monitors
        imported = [
            account_id
            for c in commands
            if c.imported_at is not None
            for account_id in (c.debit_account_id, c.credit_account_id)
        ]
        if imported:
            self.last_posted = await movement_repo.last_posted_at(session, imported)

    def posted_at(
        self, transfer: TransferState, account_id: uuid.UUID, now: dt.datetime
    ) -> dt.datetime:
        """When this transfer's entry on the account is posted: its import time, or now."""
        at = transfer.imported_at or now
        self.last_posted[account_id] = at
        return at

    def watch(self, debit: AccountState, credit: AccountState) -> monitor_rules.Watched:
        if not self.monitors:
            return []
        return monitor_rules.before_change(self.monitors, (debit, credit))

    def monitor_events(
        self, watched: monitor_rules.Watched, transfer: TransferState, ctx: WriteContext
    ) -> list[PendingEvent]:
        """One event per monitor the change made true (see ledger/posting/monitors.py)."""
        found = []
        for account, monitor in monitor_rules.fired(watched):
            self.fired.append((monitor.id, account.id, transfer.id))
            found.append(events.monitor_triggered(monitor, account, transfer, ctx))
        return found

    def flush(self, session: AsyncSession, writer: BulkWriter) -> None:
        movement_repo.add_monitor_counts(
            writer, (m for found in self.monitors.values() for m in found)
        )
        if self.fired:
            fired = list(self.fired)
            after_commit(session, lambda: _log_fired(fired))


def _log_fired(fired: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]) -> None:
    for monitor_id, account_id, transfer_id in fired:
        log.info(
            "monitor.triggered",
            monitor_id=str(monitor_id),
            account_id=str(account_id),
            transfer_id=str(transfer_id),
        )


def decide(
    state: MovementState,
    command: TransferCommand,
    transfer: TransferState,
    debit: AccountState,
    credit: AccountState,
    now: dt.datetime,
) -> None:
    """Settle a new transfer's amount and time before it moves money (raises a refusal)."""
    periods.check_open(command.imported_at or now, state.locked_until)
    if command.imported_at is not None:
        periods.check_import(command.imported_at, now, (debit.id, credit.id), state.last_posted)
        transfer.imported_at = command.imported_at
        transfer.created_at = transfer.updated_at = command.imported_at
    if command.balancing:
        amount = balancing_amount(debit, credit, command.amount, command.pending)
        transfer.amount_ceiling = command.amount
        transfer.amount = amount
        if not command.pending:
            transfer.posted_amount = amount
