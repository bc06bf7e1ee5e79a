"""The posting kernel: one transaction's per-transfer steps, and what each step answers.

`Posting` holds what a transaction changes (locked accounts, transfers, entries, events, audit
records) and decides each operation on that locked state: `create`, `post`, `void`, `expire`,
`reverse`. `flush` writes it all in bulk. The transaction-level entry points that lock and
load before these steps live in `ledger.posting.engine`.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit.writer import AuditEntry, add_audit
from ledger.core.bulk import BulkWriter
from ledger.core.context import WriteContext
from ledger.core.db import after_commit
from ledger.core.errors import (
    AccountNotFound,
    LedgerError,
    SameAccount,
    TransferAlreadyVoided,
    TransferExistsWithDifferentFields,
)
from ledger.core.ids import new_id
from ledger.core.schemas import EMPTY_METADATA
from ledger.posting import events, movement, rules, snapshots
from ledger.posting import repository as repo
from ledger.posting.commands import TransferCommand, command_data
from ledger.posting.events import TransferEventKind, transfer_data
from ledger.posting.state import AccountState, TransferState
from observability import metrics
from outbox.writer import PendingEvent, add_events


class OutcomeKind(enum.Enum):
    CREATED = "created"  # a new transfer: a create, or a reversal
    CHANGED = "changed"  # an existing transfer moved on: posted, voided or expired
    UNCHANGED = "unchanged"  # asked again, already so (or not due yet): nothing written
    REFUSED = "refused"  # `error` says why; nothing written for this item


@dataclass(slots=True)
class Outcome:
    kind: OutcomeKind
    transfer: TransferState | None = None
    error: LedgerError | None = None

    @classmethod
    def refused(cls, error: LedgerError) -> Outcome:
        return cls(OutcomeKind.REFUSED, error=error)


class Posting:
    """What one transaction changes; written in bulk by `flush`."""

    def __init__(self, ctx: WriteContext) -> None:
        self.ctx = ctx
        self.accounts: dict[uuid.UUID, AccountState] = {}
        self.transfers: dict[uuid.UUID, TransferState] = {}
        self.entries: list[dict[str, Any]] = []
        self.events: list[PendingEvent] = []
        self.audit: list[AuditEntry] = []
        self.states: list[str] = []  # resulting transfer states, counted once committed
        self.movement = movement.MovementState()  # period lock, monitors, last entry times

    # -- recording -------------------------------------------------------------------------

    def _entries(self, transfer: TransferState, amount: int) -> None:
        for account, direction in (
            (self.accounts[transfer.debit_account_id], "debit"),
            (self.accounts[transfer.credit_account_id], "credit"),
        ):
            self.entries.append(
                {
                    "account_id": account.id,
                    "transfer_id": transfer.id,
                    "direction": direction,
                    "amount": amount,
                    "balance_after": account.posted,
                    "sequence": account.version,
                    "posted_at": self.movement.posted_at(transfer, account.id, self.ctx.now),
                }
            )

    def _moved(
        self, transfer: TransferState, deltas: tuple[rules.Delta, rules.Delta], posted: int
    ) -> None:
        debit = self.accounts[transfer.debit_account_id]
        credit = self.accounts[transfer.credit_account_id]
        watched = self.movement.watch(debit, credit)
        rules.move(debit, credit, deltas[0], deltas[1], self.ctx.now)
        snapshots.record_after(transfer, debit, credit)
        if posted:
            self._entries(transfer, posted)
        self.events.append(events.balance_changed(debit, transfer, self.ctx))
        self.events.append(events.balance_changed(credit, transfer, self.ctx))
        self.events.extend(self.movement.monitor_events(watched, transfer, self.ctx))

    def _transfer_event(self, kind: TransferEventKind, transfer: TransferState) -> None:
        self.events.append(events.transfer_event(kind, transfer, self.ctx))
        self.states.append(transfer.state)

    def _audit(self, action: str, transfer_id: uuid.UUID, data: dict[str, Any]) -> None:
        self.audit.append(
            AuditEntry(
                ctx=self.ctx,
                action=action,
                object_type="transfer",
                object_id=str(transfer_id),
                data=data,
            )
        )

    # -- operations ------------------------------------------------------------------------

    def create(self, command: TransferCommand, tombstones: set[uuid.UUID]) -> Outcome:
        transfer_id = command.id
        if transfer_id is not None:
            existing = self.transfers.get(transfer_id)
            if existing is not None:
                if rules.same_fields(existing, command):
                    return Outcome(OutcomeKind.UNCHANGED, existing)
                raise TransferExistsWithDifferentFields(
                    f"transfer {transfer_id} exists with different fields"
                )
            if transfer_id in tombstones:
                raise TransferAlreadyVoided(f"transfer {transfer_id} was voided before it existed")
        debit = self.accounts.get(command.debit_account_id)
        credit = self.accounts.get(command.credit_account_id)
        if command.debit_account_id == command.credit_account_id:
            raise SameAccount("debit_account_id and credit_account_id must differ")
        if debit is None or credit is None:
            missing = command.debit_account_id if debit is None else command.credit_account_id
            raise AccountNotFound(f"account {missing} not found")
        rules.check_pair(debit, credit, command.currency)
        rules.check_active(debit, credit)
        transfer = self._new_transfer(command, debit, credit)
        movement.decide(self.movement, command, transfer, debit, credit, self.ctx.now)
        if command.pending:
            self._moved(transfer, rules.hold_deltas(transfer.amount), posted=0)
        else:
            self._moved(transfer, rules.post_deltas(transfer.amount), posted=transfer.amount)
        self.transfers[transfer.id] = transfer
        self._transfer_event("pending" if command.pending else "posted", transfer)
        self._audit(
            "transfer.create",
            transfer.id,
            {"request": command_data(command), "result": transfer_data(transfer)},
        )
        return Outcome(OutcomeKind.CREATED, transfer)

    def _new_transfer(
        self, command: TransferCommand, debit: AccountState, credit: AccountState
    ) -> TransferState:
        now = self.ctx.now
        timeout_at = None
        if command.pending and command.timeout_seconds:
            timeout_at = now + dt.timedelta(seconds=command.timeout_seconds)
        return TransferState(
            id=command.id or new_id(),
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=command.amount,
            currency=debit.currency,
            state="pending" if command.pending else "posted",
            posted_amount=0 if command.pending else command.amount,
            reversed_amount=0,
            reference=command.reference,
            metadata=command.metadata,
            timeout_at=timeout_at,
            created_at=now,
            updated_at=now,
            reversal_of=None,
            created_pending=command.pending,
            timeout_seconds=command.timeout_seconds if command.pending else None,
            is_new=True,
        )

    def post(self, transfer: TransferState, amount: int | None) -> Outcome:
        """Confirm (post) a pending transfer, in full or for less; the rest is released."""
        if rules.already_posted(transfer, amount):
            return Outcome(OutcomeKind.UNCHANGED, transfer)
        posted = rules.post_amount(transfer, amount, self.ctx.now)
        self._moved(transfer, rules.settle_deltas(transfer.amount, posted), posted)
        transfer.state = "posted"
        transfer.posted_amount = posted
        transfer.updated_at = self.ctx.now
        transfer.changed = True
        self._transfer_event("posted", transfer)
        self._audit(
            "transfer.post",
            transfer.id,
            {"request": {"amount": amount}, "result": transfer_data(transfer)},
        )
        return Outcome(OutcomeKind.CHANGED, transfer)

    def void(self, transfer: TransferState) -> Outcome:
        """Cancel (void) a pending transfer: the hold is released in full."""
        return self._release(transfer, "voided", "transfer.void")

    def expire(self, transfer: TransferState) -> Outcome:
        """Expire a pending transfer past its timeout: the hold is released in full."""
        if transfer.state != "pending" or not rules.is_due(transfer, self.ctx.now):
            return Outcome(OutcomeKind.UNCHANGED, transfer)
        return self._release(transfer, "expired", "transfer.expire")

    def _release(self, transfer: TransferState, final: TransferEventKind, action: str) -> Outcome:
        if transfer.state == final:
            return Outcome(OutcomeKind.UNCHANGED, transfer)
        rules.check_pending(transfer)
        self._moved(transfer, rules.release_deltas(transfer.amount), posted=0)
        transfer.state = final
        transfer.updated_at = self.ctx.now
        transfer.changed = True
        self._transfer_event(final, transfer)
        self._audit(action, transfer.id, {"result": transfer_data(transfer)})
        return Outcome(OutcomeKind.CHANGED, transfer)

    def reverse(
        self, original: TransferState, amount: int | None, reversal_id: uuid.UUID
    ) -> Outcome:
        """Move back all or part of a posted transfer, as a new transfer the other way."""
        reversed_now = rules.reversal_amount(original, amount)
        debit = self.accounts[original.credit_account_id]
        credit = self.accounts[original.debit_account_id]
        rules.check_active(debit, credit)
        now = self.ctx.now
        reversal = TransferState(
            id=reversal_id,
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=reversed_now,
            currency=original.currency,
            state="posted",
            posted_amount=reversed_now,
            reversed_amount=0,
            reference=original.reference,
            metadata=EMPTY_METADATA,  # a reversal carries none of its own
            timeout_at=None,
            created_at=now,
            updated_at=now,
            reversal_of=original.id,
            created_pending=False,
            timeout_seconds=None,
            is_new=True,
        )
        self._moved(reversal, rules.post_deltas(reversed_now), posted=reversed_now)
        original.reversed_amount += reversed_now
        original.updated_at = now
        original.changed = True
        self.transfers[reversal.id] = reversal
        self._transfer_event("reversed", reversal)
        self._audit(
            "transfer.reverse",
            original.id,
            {
                "request": {"amount": amount},
                "result": transfer_data(reversal),
                "reversed_amount": original.reversed_amount,
            },
        )
        return Outcome(OutcomeKind.CREATED, reversal)

    async def flush(self, session: AsyncSession, writer: BulkWriter | None = None) -> None:
        """Write what the posting decided: sent now, or queued on the caller's `writer`."""
        if self.states:
            states = list(self.states)
            after_commit(session, lambda: _count_states(states))
        # One round trip for all of it (COPY for very large batches aside).
        own = writer is None
        writer = writer or BulkWriter(session)
        repo.add_accounts(writer, sorted(self.accounts.values(), key=lambda a: a.id))
        await repo.add_transfers(writer, self.transfers.values())
        await repo.add_entries(writer, self.entries)
        await add_events(writer, self.events, self.ctx)
        await add_audit(writer, self.audit, self.ctx)
        self.movement.flush(session, writer)
        if own:
            await writer.flush()


def _count_states(states: list[str]) -> None:
    for state in states:
        metrics.TRANSFERS.labels(state=state).inc()
