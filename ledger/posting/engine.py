"""The posting kernel. Its primitive: post this list of transfer commands in one transaction.

Sequence, for every operation: lock transfer ids (advisory, sorted) -> lock accounts
(`ORDER BY id FOR UPDATE`) -> read transfers and tombstones *after* the locks -> decide on the
locked state, item by item in arrival order -> write transfers, entries, balances, events and
audit records in bulk. The caller owns the transaction and commits once.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from accounts.schemas import balances_of
from ledger.audit.writer import AuditEntry, add_audit, write_audit
from ledger.core.bulk import BulkWriter
from ledger.core.context import WriteContext
from ledger.core.db import after_commit
from ledger.core.errors import (
    AccountNotFound,
    InvariantViolation,
    LedgerError,
    NotCommitted,
    PostExceedsPending,
    ReversalExceedsPosted,
    SameAccount,
    TransferAlreadyVoided,
    TransferExistsWithDifferentFields,
    TransferNotFound,
    TransferNotPending,
    TransferNotPosted,
)
from ledger.core.ids import new_id
from ledger.posting import repository as repo
from ledger.posting import rules
from ledger.posting.repository import TransferRow
from ledger.posting.rules import AccountState
from observability import metrics
from outbox.writer import PendingEvent, add_events
from transfers.schemas import TransferOut


@dataclass(frozen=True, slots=True)
class TransferCommand:
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: int
    id: uuid.UUID | None = None
    currency: str | None = None
    pending: bool = False
    timeout_seconds: int | None = None
    reference: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Outcome:
    status: int
    transfer: TransferRow | None = None
    error: LedgerError | None = None


def transfer_out(t: TransferRow) -> TransferOut:
    return TransferOut(
        id=t.id,
        debit_account_id=t.debit_account_id,
        credit_account_id=t.credit_account_id,
        amount=t.amount,
        currency=t.currency,
        state=t.state,  # type: ignore[arg-type]
        posted_amount=t.posted_amount,
        reference=t.reference,
        metadata=t.metadata,
        timeout_at=t.timeout_at,
        created_at=t.created_at,
        updated_at=t.updated_at,
        reversal_of=t.reversal_of,
    )


class Posting:
    """What one transaction changes; written in bulk by `flush`."""

    def __init__(self, ctx: WriteContext) -> None:
        self.ctx = ctx
        self.accounts: dict[uuid.UUID, AccountState] = {}
        self.transfers: dict[uuid.UUID, TransferRow] = {}
        self.entries: list[dict[str, Any]] = []
        self.events: list[PendingEvent] = []
        self.audit: list[AuditEntry] = []
        self.states: list[str] = []  # resulting transfer states, counted once committed

    # -- recording -------------------------------------------------------------------------

    def _account_changed(self, account: AccountState, transfer: TransferRow) -> None:
        self.events.append(
            PendingEvent(
                type="ledger.account.balance_changed",
                subject=account.id,
                sequence=account.version,
                ctx=self.ctx,
                data={
                    "account_id": account.id,
                    "transfer_id": transfer.id,
                    "version": account.version,
                    "balances": balances_of(account),
                },
            )
        )

    def _entries(self, transfer: TransferRow, amount: int) -> None:
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
                    "posted_at": self.ctx.now,
                }
            )

    def _moved(
        self, transfer: TransferRow, deltas: tuple[rules.Delta, rules.Delta], posted: int
    ) -> None:
        debit = self.accounts[transfer.debit_account_id]
        credit = self.accounts[transfer.credit_account_id]
        rules.move(debit, credit, deltas[0], deltas[1], self.ctx.now)
        if posted:
            self._entries(transfer, posted)
        self._account_changed(debit, transfer)
        self._account_changed(credit, transfer)

    def _transfer_event(self, kind: str, transfer: TransferRow) -> None:
        self.events.append(
            PendingEvent(
                type=f"ledger.transfer.{kind}",
                subject=transfer.id,
                data=transfer_out(transfer),
                ctx=self.ctx,
            )
        )
        self.states.append(transfer.state)

    # -- operations ------------------------------------------------------------------------

    def create(self, command: TransferCommand, tombstones: set[uuid.UUID]) -> Outcome:
        transfer_id = command.id
        if transfer_id is not None:
            existing = self.transfers.get(transfer_id)
            if existing is not None:
                if same_fields(existing, command):
                    return Outcome(200, existing)
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
        now = self.ctx.now
        timeout_at = None
        if command.pending and command.timeout_seconds:
            timeout_at = now + dt.timedelta(seconds=command.timeout_seconds)
        transfer = TransferRow(
            id=transfer_id or new_id(),
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
        if command.pending:
            self._moved(transfer, rules.hold_deltas(command.amount), posted=0)
        else:
            self._moved(transfer, rules.post_deltas(command.amount), posted=command.amount)
        self.transfers[transfer.id] = transfer
        self._transfer_event(transfer.state, transfer)
        self.audit.append(
            AuditEntry(
                ctx=self.ctx,
                action="transfer.create",
                object_type="transfer",
                object_id=str(transfer.id),
                data={"request": command_data(command), "result": transfer_out(transfer)},
            )
        )
        return Outcome(201, transfer)

    def settle(self, transfer: TransferRow, amount: int | None) -> Outcome:
        """Confirm (post) a pending transfer, in full or for less; the rest is released."""
        if transfer.state == "posted" and (amount is None or amount == transfer.posted_amount):
            return Outcome(200, transfer)
        if transfer.state != "pending":
            raise TransferNotPending(f"transfer {transfer.id} is {transfer.state}")
        if transfer.timeout_at is not None and transfer.timeout_at <= self.ctx.now:
            raise TransferNotPending(f"transfer {transfer.id} expired at {transfer.timeout_at}")
        post_amount = transfer.amount if amount is None else amount
        if post_amount > transfer.amount:
            raise PostExceedsPending(
                f"cannot post {post_amount}: transfer {transfer.id} holds {transfer.amount}"
            )
        self._moved(transfer, rules.settle_deltas(transfer.amount, post_amount), post_amount)
        transfer.state = "posted"
        transfer.posted_amount = post_amount
        transfer.updated_at = self.ctx.now
        transfer.changed = True
        self._transfer_event("posted", transfer)
        self.audit.append(
            AuditEntry(
                ctx=self.ctx,
                action="transfer.post",
                object_type="transfer",
                object_id=str(transfer.id),
                data={"request": {"amount": amount}, "result": transfer_out(transfer)},
            )
        )
        return Outcome(200, transfer)

    def release(self, transfer: TransferRow, *, expire: bool) -> Outcome:
        """Cancel (void) a pending transfer, or expire it: the hold is released in full."""
        final = "expired" if expire else "voided"
        if transfer.state == final:
            return Outcome(200, transfer)
        if transfer.state != "pending":
            raise TransferNotPending(f"transfer {transfer.id} is {transfer.state}")
        self._moved(transfer, rules.release_deltas(transfer.amount), posted=0)
        transfer.state = final
        transfer.updated_at = self.ctx.now
        transfer.changed = True
        self._transfer_event(final, transfer)
        self.audit.append(
            AuditEntry(
                ctx=self.ctx,
                action="transfer.expire" if expire else "transfer.void",
                object_type="transfer",
                object_id=str(transfer.id),
                data={"result": transfer_out(transfer)},
            )
        )
        return Outcome(200, transfer)

    def reverse(self, original: TransferRow, amount: int | None, reversal_id: uuid.UUID) -> Outcome:
        if original.state != "posted":
            raise TransferNotPosted(f"transfer {original.id} is {original.state}")
        remaining = original.posted_amount - original.reversed_amount
        reverse_amount = remaining if amount is None else amount
        if reverse_amount > remaining or reverse_amount <= 0:
            raise ReversalExceedsPosted(
                f"transfer {original.id} has {remaining} left to reverse, asked {reverse_amount}"
            )
        debit = self.accounts[original.credit_account_id]
        credit = self.accounts[original.debit_account_id]
        rules.check_active(debit, credit)
        now = self.ctx.now
        reversal = TransferRow(
            id=reversal_id,
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=reverse_amount,
            currency=original.currency,
            state="posted",
            posted_amount=reverse_amount,
            reversed_amount=0,
            reference=original.reference,
            metadata={},
            timeout_at=None,
            created_at=now,
            updated_at=now,
            reversal_of=original.id,
            created_pending=False,
            timeout_seconds=None,
            is_new=True,
        )
        self._moved(reversal, rules.post_deltas(reverse_amount), posted=reverse_amount)
        original.reversed_amount += reverse_amount
        original.updated_at = now
        original.changed = True
        self.transfers[reversal.id] = reversal
        self._transfer_event("reversed", reversal)
        self.audit.append(
            AuditEntry(
                ctx=self.ctx,
                action="transfer.reverse",
                object_type="transfer",
                object_id=str(original.id),
                data={
                    "request": {"amount": amount},
                    "result": transfer_out(reversal),
                    "reversed_amount": original.reversed_amount,
                },
            )
        )
        return Outcome(201, reversal)

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
        if own:
            await writer.flush()


def _count_states(states: list[str]) -> None:
    for state in states:
        metrics.TRANSFERS.labels(state=state).inc()


def same_fields(existing: TransferRow, command: TransferCommand) -> bool:
    """TigerBeetle's `exists` vs `exists_with_different_fields`, on what the client asked."""
    return (
        existing.reversal_of is None
        and existing.debit_account_id == command.debit_account_id
        and existing.credit_account_id == command.credit_account_id
        and existing.amount == command.amount
        and (command.currency is None or command.currency == existing.currency)
        and existing.created_pending == command.pending
        and (existing.timeout_seconds or 0) == (command.timeout_seconds or 0)
        and existing.reference == command.reference
        and existing.metadata == command.metadata
    )


def command_data(command: TransferCommand) -> dict[str, Any]:
    return {
        "id": command.id,
        "debit_account_id": command.debit_account_id,
        "credit_account_id": command.credit_account_id,
        "amount": command.amount,
        "currency": command.currency,
        "pending": command.pending,
        "timeout_seconds": command.timeout_seconds,
        "reference": command.reference,
        "metadata": command.metadata,
    }


async def create_transfers(
    session: AsyncSession,
    commands: list[TransferCommand],
    *,
    atomic: bool,
    ctx: WriteContext,
    contexts: list[WriteContext] | None = None,
    writer: BulkWriter | None = None,
) -> list[Outcome]:
    """Create transfers in one transaction, each checked in arrival order on locked balances.

    Not atomic: a refused item leaves its neighbours untouched. Atomic: the first refused item
    names its error, every other item answers `not_committed`, and nothing is written.
    `contexts` (group commit) gives each command the request it came from, for its events and
    audit record; they must share one `now`. With `writer`, the writes are queued on it for the
    caller to send (with more of its own), instead of being sent before returning.
    """
    started = time.perf_counter()
    client_ids = [c.id for c in commands if c.id is not None]
    posting = Posting(ctx)
    account_ids = [i for c in commands for i in (c.debit_account_id, c.credit_account_id)]
    locked = await repo.lock_for_create(session, client_ids, account_ids)
    posting.accounts = locked.accounts
    posting.transfers = locked.transfers
    tombstones = locked.tombstones
    if contexts is not None and len(contexts) != len(commands):
        raise InvariantViolation("group commit needs one context per command")
    outcomes: list[Outcome] = []
    for index, command in enumerate(commands):
        if contexts is not None:
            posting.ctx = contexts[index]
        try:
            outcomes.append(posting.create(command, tombstones))
        except LedgerError as error:
            if atomic:
                return _not_committed(len(commands), len(outcomes), error)
            outcomes.append(Outcome(error.status, error=error))
    await posting.flush(session, writer)
    if writer is None:  # else the caller sends the writes, and observes the whole post
        metrics.TRANSFER_DURATION.observe(time.perf_counter() - started)
    return outcomes


def _not_committed(count: int, failed_index: int, error: LedgerError) -> list[Outcome]:
    outcomes = []
    for index in range(count):
        if index == failed_index:
            outcomes.append(Outcome(error.status, error=error))
        else:
            skipped = NotCommitted(f"item {failed_index} failed: {error.code}")
            outcomes.append(Outcome(skipped.status, error=skipped))
    return outcomes


async def _lock_existing(
    session: AsyncSession, posting: Posting, transfer_id: uuid.UUID
) -> TransferRow | None:
    """The transfer and its accounts, locked (repo.lock_existing), on the posting."""
    posting.accounts, transfer = await repo.lock_existing(session, transfer_id)
    if transfer is not None:
        posting.transfers = {transfer_id: transfer}
    return transfer


async def post_pending(
    session: AsyncSession, transfer_id: uuid.UUID, amount: int | None, ctx: WriteContext
) -> Outcome:
    posting = Posting(ctx)
    transfer = await _lock_existing(session, posting, transfer_id)
    if transfer is None:
        if transfer_id in await repo.load_tombstones(session, [transfer_id]):
            raise TransferNotPending(f"transfer {transfer_id} was voided")
        raise TransferNotFound(f"transfer {transfer_id} not found")
    outcome = posting.settle(transfer, amount)
    await posting.flush(session)
    return outcome


async def void_pending(
    session: AsyncSession, transfer_id: uuid.UUID, ctx: WriteContext, *, expire: bool = False
) -> Outcome | None:
    """Void (or expire) a pending transfer. Returns None for an id the ledger never saw: the
    caller answers the TCC empty cancel, after a tombstone is written here."""
    posting = Posting(ctx)
    transfer = await _lock_existing(session, posting, transfer_id)
    if transfer is None:
        if expire:
            return None
        if transfer_id not in await repo.load_tombstones(session, [transfer_id]):
            await repo.insert_tombstone(session, transfer_id, ctx.now)
            await write_audit(
                session,
                [
                    AuditEntry(
                        action="transfer.void",
                        object_type="transfer",
                        object_id=str(transfer_id),
                        data={"result": {"state": "voided", "amount": 0, "empty_cancel": True}},
                    )
                ],
                ctx,
            )
        return None
    if expire and (
        transfer.state != "pending" or transfer.timeout_at is None or transfer.timeout_at > ctx.now
    ):
        return Outcome(200, transfer)
    outcome = posting.release(transfer, expire=expire)
    await posting.flush(session)
    return outcome


async def reverse_transfer(
    session: AsyncSession,
    transfer_id: uuid.UUID,
    amount: int | None,
    ctx: WriteContext,
) -> Outcome:
    posting = Posting(ctx)
    original = await _lock_existing(session, posting, transfer_id)
    if original is None:
        raise TransferNotFound(f"transfer {transfer_id} not found")
    outcome = posting.reverse(original, amount, new_id())
    await posting.flush(session)
    return outcome
