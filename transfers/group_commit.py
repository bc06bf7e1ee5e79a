"""Group commit: concurrent single-transfer requests of one process share one transaction.

Why: a hot account (one merchant or fee account in most transfers) serialises every transfer on
its row lock, and each holder waits for its own commit. Posting many transfers per commit
amortises the lock hold and the commit (TigerBeetle's answer, done inside PostgreSQL here).

How: requests queue up; up to `inflight_max` batches run at once, each taking at most
`batch_size_max` queued requests. A request that arrives while every slot is busy waits for the
next batch; a request that finds a free slot leaves at the next turn of the event loop, so an idle
server adds no latency. A request touching an account that a running batch holds stays queued
until that batch ends: starting it would only make it wait on the row lock, holding a slot. So
under a hot account there is one batch at a time and every request that arrived meanwhile joins
the next one (the batch grows with the contention), while transfers between unrelated accounts
still run in parallel batches.

Each batch is one transaction: Idempotency-Key rows first (sorted, one statement), then the
posting engine, non-atomic, checking every transfer in arrival order on the locked balances,
then each keyed request's stored response. Every request gets its own outcome.

What stays exactly as it is per transfer: events, audit records and sequences (each with its own
request's context), the Idempotency-Key rules (a key that already exists, or appears twice in one
batch, leaves the batch and takes the one-request path, which waits and replays), and refusals
(a refused transfer never fails its neighbours). A database error fails the whole batch, after
the usual deadlock retries, and every request in it gets the same retryable answer (503).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import datetime as dt
import time
import uuid
from dataclasses import dataclass, field, replace

import msgspec
import structlog
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.core import limits
from ledger.core.bulk import unit_writer
from ledger.core.context import WriteContext
from ledger.core.db import run_in_transaction
from ledger.core.errors import (
    PROBLEM_MEDIA_TYPE,
    ConfigurationError,
    IdempotencyKeyInUse,
    LedgerError,
)
from ledger.http.state import Services
from ledger.idempotency import store as idempotency
from ledger.idempotency.store import IdempotencyClaim, StoredResponse
from ledger.posting import engine
from ledger.posting.commands import TransferCommand
from ledger.posting.engine import Outcome
from observability import metrics
from transfers.schemas import outcome_status, transfer_out

log = structlog.get_logger("ledger.group_commit")
GROUP_COMMIT = "group_commit"  # its key in Services.extensions


@dataclass(slots=True)
class Submission:
    command: TransferCommand
    ctx: WriteContext
    claim: IdempotencyClaim | None
    # The span of the request that submitted this transfer; the batch span links to it.
    span_context: trace.SpanContext | None = None
    context: contextvars.Context | None = None
    # None as a result: the key was taken, answer through the one-request path instead.
    future: asyncio.Future[StoredResponse | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def accounts(self) -> tuple[uuid.UUID, uuid.UUID]:
        return (self.command.debit_account_id, self.command.credit_account_id)


class GroupCommitter:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        batch_size_max: int = limits.GROUP_COMMIT_BATCH_SIZE_MAX,
        inflight_max: int = limits.GROUP_COMMIT_INFLIGHT_MAX,
    ) -> None:
        if batch_size_max < 1 or inflight_max < 1:
            raise ConfigurationError("group commit bounds must be positive")
        self.sessionmaker = sessionmaker
        self.batch_size_max = batch_size_max
        self.inflight_max = inflight_max
        self.queue: list[Submission] = []
        self.inflight = 0
        self.scheduled = False
        self.tasks: set[asyncio.Task[None]] = set()
        # Accounts the running batches lock (a count per batch that touches them).
        self.busy: collections.Counter[uuid.UUID] = collections.Counter()
        # Accounts of queued requests that must wait (for a running batch, or behind an
        # earlier request on the same account).
        self.claimed: set[uuid.UUID] = set()

    async def submit(
        self, command: TransferCommand, ctx: WriteContext, claim: IdempotencyClaim | None
    ) -> StoredResponse | None:
        submission = Submission(
            command=command,
            ctx=ctx,
            claim=claim,
            span_context=trace.get_current_span().get_span_context(),
            context=contextvars.copy_context(),
        )
        self.queue.append(submission)
        if self._must_wait(submission):
            # Nothing can start for it before a batch ends, and the end of a batch looks at the
            # queue again: no scan now (under a hot account with many clients, a scan per
            # arrival would cost the square of the queue).
            self.claimed.update(submission.accounts)
        else:
            self._schedule()
        return await submission.future

    def _must_wait(self, submission: Submission) -> bool:
        return any(a in self.busy or a in self.claimed for a in submission.accounts)

    def _schedule(self) -> None:
        # Start at the next turn of the loop, so requests arriving together leave together.
        if not self.scheduled and self.inflight < self.inflight_max:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._start_batches)

    def _start_batches(self) -> None:
        self.scheduled = False
        while self.queue and self.inflight < self.inflight_max:
            batch = self._take()
            if not batch:
                break  # everything queued waits for accounts a running batch holds
            self.inflight += 1
            # A batch of one runs in its request's context (its trace and log ids); a larger
            # batch belongs to no single request: a clean context, and a span linking them all.
            alone = batch[0].context if len(batch) == 1 else None
            task = asyncio.create_task(self._run(batch), context=alone or contextvars.Context())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _take(self) -> list[Submission]:
        """The next batch, in arrival order: queued requests whose accounts no running batch
        holds. The others keep their place in the queue, and so do later requests on any of
        their accounts: per account, requests leave in the order they came, and a waiting one
        cannot be overtaken forever by newcomers on the same account."""
        batch: list[Submission] = []
        waiting: list[Submission] = []
        claimed: set[uuid.UUID] = set()  # accounts of requests that wait
        for submission in self.queue:
            accounts = submission.accounts
            free = not any(a in self.busy or a in claimed for a in accounts)
            if free and len(batch) < self.batch_size_max:
                batch.append(submission)
            else:
                waiting.append(submission)
                claimed.update(accounts)
        self.queue = waiting
        self.claimed = claimed
        for submission in batch:
            self.busy.update(submission.accounts)
        return batch

    def _release(self, batch: list[Submission]) -> None:
        for submission in batch:
            self.busy.subtract(submission.accounts)
        for account in [a for s in batch for a in s.accounts if self.busy[a] <= 0]:
            self.busy.pop(account, None)

    async def _run(self, batch: list[Submission]) -> None:
        metrics.GROUP_COMMIT_BATCH_SIZE.observe(len(batch))
        links = [
            trace.Link(s.span_context)
            for s in batch
            if s.span_context is not None and s.span_context.is_valid
        ]
        tracer = trace.get_tracer("ledger.group_commit")
        span = (
            tracer.start_as_current_span(
                "group_commit.batch", links=links, attributes={"ledger.batch_size": len(batch)}
            )
            if len(batch) > 1
            else contextlib.nullcontext()
        )
        try:
            with span:
                started = time.perf_counter()
                results = await run_in_transaction(
                    self.sessionmaker,
                    lambda session: self._post(session, batch),
                    pipelined_commit=True,  # the batch's writes and COMMIT in one round trip
                )
                metrics.TRANSFER_DURATION.observe(time.perf_counter() - started)
        except IdempotencyKeyInUse:
            # A key of the batch is held by a request still running: nothing committed, so
            # every request of the batch takes the one-request path, where only the keyed one
            # waits (and replays, or answers 409 idempotency_key_in_use).
            for submission in batch:
                if not submission.future.done():
                    submission.future.set_result(None)
        except BaseException as exc:  # every waiter must hear the outcome, whatever it is
            for submission in batch:
                if not submission.future.done():
                    submission.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for submission, result in zip(batch, results, strict=True):
                if not submission.future.done():
                    submission.future.set_result(result)
        finally:
            self.inflight -= 1
            self._release(batch)
            if self.queue:
                self._schedule()

    async def _post(
        self, session: AsyncSession, batch: list[Submission]
    ) -> list[StoredResponse | None]:
        now = dt.datetime.now(dt.UTC)
        contexts = [replace(s.ctx, now=now) for s in batch]
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
            response = _response(outcome)
            results[index] = response
            claim = batch[index].claim
            if claim is not None:
                answered.append((claim, response))
        writer.add(idempotency.store_statement(answered))
        return results


def _response(outcome: Outcome) -> StoredResponse:
    if outcome.error is not None:
        return StoredResponse.of_error(outcome.error)
    if outcome.transfer is None:
        error = LedgerError("the posting engine returned no transfer")
        return StoredResponse(500, msgspec.json.encode(error.problem()), False, PROBLEM_MEDIA_TYPE)
    return StoredResponse(
        outcome_status(outcome), msgspec.json.encode(transfer_out(outcome.transfer))
    )


def install_group_commit(services: Services, committer: GroupCommitter) -> None:
    services.extensions[GROUP_COMMIT] = committer


def group_committer_of(services: Services) -> GroupCommitter | None:
    committer: GroupCommitter | None = services.extensions.get(GROUP_COMMIT)
    return committer
