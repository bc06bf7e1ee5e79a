"""Group commit's unit of work: one batch's transaction body, and each request's answer.

Idempotency-Key rows first (sorted, one statement), then the posting engine, non-atomic,
checking every transfer in arrival order on the locked balances, then each keyed request's
stored response, queued on the unit's writer to go with the COMMIT.
"""

from __future__ import annotations

import datetime as dt

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.bulk import unit_writer
from ledger.core.errors import PROBLEM_MEDIA_TYPE, LedgerError
from ledger.idempotency import store as idempotency
from ledger.idempotency.store import IdempotencyClaim, StoredResponse
from ledger.posting import engine
from ledger.posting.engine import Outcome
from transfers.group_commit_queue import Submission
from transfers.schemas import outcome_status, transfer_out


async def post_batch(session: AsyncSession, batch: list[Submission]) -> list[StoredResponse | None]:
    """One batch's unit of work, in the transaction the committer runs: its Idempotency-Key
    rows, the posting engine (non-atomic), then each keyed request's stored response. An item
    whose key was taken answers None (it takes the one-request path)."""
    # The keys' creation time (their life starts here); the transfers' time is the
    # engine's, the database clock once the batch's locks are held, shared by all of them.
    now = dt.datetime.now(dt.UTC)
    contexts = [s.ctx for s in batch]
    # A key that exists already, or appears twice in the batch, leaves the batch: its
    # request takes the one-request path, which waits and replays.
    taken = await idempotency.claim_many(session, [s.claim for s in batch], now)
    live = [i for i, s in enumerate(batch) if i not in taken]
    writer = unit_writer(session)
    outcomes = await engine.create_transfers(
        session,
        [batch[i].command for i in live],
        atomic=False,
        ctx=contexts[0],
        contexts=[contexts[i] for i in live],
        writer=writer,
    )
    results: list[StoredResponse | None] = [None] * len(batch)
    answered: list[tuple[IdempotencyClaim, StoredResponse]] = []
    for index, outcome in zip(live, outcomes, strict=True):
        response = response_of(outcome)
        results[index] = response
        claim = batch[index].claim
        if claim is not None:
            answered.append((claim, response))
    writer.add(idempotency.store_statement(answered))
    return results


def response_of(outcome: Outcome) -> StoredResponse:
    if outcome.error is not None:
        return StoredResponse.of_error(outcome.error)
    if outcome.transfer is None:
        error = LedgerError("the posting engine returned no transfer")
        return StoredResponse(500, msgspec.json.encode(error.problem()), False, PROBLEM_MEDIA_TYPE)
    return StoredResponse(
        outcome_status(outcome), msgspec.json.encode(transfer_out(outcome.transfer))
    )
