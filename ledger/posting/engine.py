"""The posting engine. Its primitive: post this list of transfer commands in one transaction.

Sequence, for every operation: lock transfer ids (advisory, sorted) -> lock accounts
(`ORDER BY id FOR UPDATE`) -> read transfers and tombstones *after* the locks -> decide on the
locked state, item by item in arrival order -> write transfers, entries, balances, events and
audit records in bulk. The caller owns the transaction and commits once.

The engine speaks the ledger's language, not HTTP's: an operation's `Outcome` says what
happened (created, changed, unchanged, refused); the layers above choose the status codes.

This module holds the transaction-level entry points (lock, load, drive, flush); the
per-transfer steps they drive, `Posting`, and `Outcome` live in `ledger.posting.kernel` and
are re-exported here.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit.writer import AuditEntry, write_audit
from ledger.core.bulk import BulkWriter
from ledger.core.context import WriteContext
from ledger.core.errors import (
    InvariantViolation,
    LedgerError,
    NotCommitted,
    TransferNotFound,
    TransferNotPending,
)
from ledger.core.ids import new_id
from ledger.posting import repository as repo
from ledger.posting.commands import TransferCommand
from ledger.posting.kernel import Outcome, OutcomeKind, Posting
from ledger.posting.state import TransferState
from observability import metrics

# The kernel's names stay importable from here, where every caller has always found them.
__all__ = [
    "Outcome",
    "OutcomeKind",
    "Posting",
    "create_transfers",
    "expire_transfer",
    "post_transfer",
    "reverse_transfer",
    "void_transfer",
]


# -- the operations, each in the caller's transaction ---------------------------------------


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
    audit record. Every item's time is the database clock once the locks are held (the `now` of
    `ctx` and `contexts` is not used). With `writer`, the writes are queued on it for the
    caller to send (with more of its own), instead of being sent before returning.
    """
    started = time.perf_counter()
    client_ids = [c.id for c in commands if c.id is not None]
    account_ids = [i for c in commands for i in (c.debit_account_id, c.credit_account_id)]
    locked = await repo.lock_for_create(session, client_ids, account_ids)
    # The transaction's one time, read after the locks: every item of it, whichever request it
    # came from (group commit), is stamped with it.
    posting = Posting(ctx.at(locked.now))
    if contexts is not None:
        contexts = [c.at(locked.now) for c in contexts]
    posting.accounts = locked.accounts
    posting.transfers = locked.transfers
    tombstones = locked.tombstones
    await posting.movement.load(session, locked, commands)
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
            outcomes.append(Outcome.refused(error))
    await posting.flush(session, writer)
    if writer is None:  # else the caller sends the writes, and observes the whole post
        metrics.TRANSFER_DURATION.observe(time.perf_counter() - started)
    return outcomes


def _not_committed(count: int, failed_index: int, error: LedgerError) -> list[Outcome]:
    outcomes = []
    for index in range(count):
        if index == failed_index:
            outcomes.append(Outcome.refused(error))
        else:
            outcomes.append(
                Outcome.refused(NotCommitted(f"item {failed_index} failed: {error.code}"))
            )
    return outcomes


async def _lock_existing(
    session: AsyncSession, posting: Posting, transfer_id: uuid.UUID
) -> TransferState | None:
    """The transfer and its accounts, locked (repo.lock_existing), on the posting; from here
    on the posting's time is the database clock read after those locks."""
    locked, transfer = await repo.lock_existing(session, transfer_id)
    posting.accounts, posting.transfers = locked.accounts, locked.transfers
    posting.ctx = posting.ctx.at(locked.now)
    await posting.movement.load(session, locked, [])
    return transfer


async def post_transfer(
    session: AsyncSession, transfer_id: uuid.UUID, amount: int | None, ctx: WriteContext
) -> Outcome:
    posting = Posting(ctx)
    transfer = await _lock_existing(session, posting, transfer_id)
    if transfer is None:
        if transfer_id in await repo.load_tombstones(session, [transfer_id]):
            raise TransferNotPending(f"transfer {transfer_id} was voided")
        raise TransferNotFound(f"transfer {transfer_id} not found")
    outcome = posting.post(transfer, amount)
    await posting.flush(session)
    return outcome


async def void_transfer(
    session: AsyncSession, transfer_id: uuid.UUID, ctx: WriteContext
) -> Outcome | None:
    """Void a pending transfer. Returns None for an id the ledger never saw: the caller answers
    the TCC empty cancel, after a tombstone is written here."""
    posting = Posting(ctx)
    transfer = await _lock_existing(session, posting, transfer_id)
    if transfer is None:
        ctx = posting.ctx  # its time read after the id lock
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
    outcome = posting.void(transfer)
    await posting.flush(session)
    return outcome


async def expire_transfer(
    session: AsyncSession, transfer_id: uuid.UUID, ctx: WriteContext
) -> Outcome | None:
    """Expire a pending transfer past its timeout (a no-op, UNCHANGED, for any other). Returns
    None for an id the ledger does not hold."""
    posting = Posting(ctx)
    transfer = await _lock_existing(session, posting, transfer_id)
    if transfer is None:
        return None
    outcome = posting.expire(transfer)
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
