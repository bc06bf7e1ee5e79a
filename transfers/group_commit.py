"""Group commit: concurrent single-transfer requests of one process share one transaction.

Why: a hot account (one merchant or fee account in most transfers) serialises every transfer on
its row lock, and each holder waits for its own commit. Posting many transfers per commit
amortises the lock hold and the commit (TigerBeetle's answer, done inside PostgreSQL here).

How: requests queue up; up to `inflight_max` batches run at once, each taking at most
`batch_size_max` queued requests. A request that arrives while every slot is busy waits for the
next batch; a request that finds a free slot leaves at the next turn of the event loop, so an idle
server adds no latency. A slot opens for a new batch only once the youngest running batch is
`stagger_seconds` old: under load the requests that arrive meanwhile form one larger batch
instead of several small ones side by side (fewer commits, round trips and trigger runs per
transfer: docs/performance.md measures it), while a batch that waits on a lock or a slow commit
holds up the requests behind it for no longer than that. A request touching an account that a
running batch holds stays queued until that batch ends: starting it would only make it wait on
the row lock, holding a slot. So under a hot account there is one batch at a time and every
request that arrived meanwhile joins the next one (the batch grows with the contention), while
transfers between unrelated accounts still run in parallel batches.

A batch request (`POST /v1/transfers/batch`, up to 1,000 transfers) takes its place in the same
queue through `exclusive`: it runs its own transaction, once no running batch and no earlier
queued request holds any of its accounts, and holds them until it ends. Concurrent batches over
the same accounts then wait here, first come first served, each for the ones before it, instead
of in PostgreSQL's row-lock queues, where a batch that locks 2,000 rows one by one can be passed
again and again (and holds a pooled connection all along).

Each batch is one transaction: Idempotency-Key rows first (sorted, one statement), then the
posting engine, non-atomic, checking every transfer in arrival order on the locked balances,
then each keyed request's stored response. Every request gets its own outcome.

Under overload, work is shed before it starts, never after: a request that finds
`queue_max` requests queued is answered 503 (with Retry-After) at once; a queued request not
started within `queue_wait_max_seconds` is taken out of the queue and answered 503; one whose
client goes away while it is queued is taken out and never runs. Once a request has started, it
runs to its outcome (bounded by the database's timeouts) whatever happens to its client: its
answer is never sent before its effect is known.

What stays exactly as it is per transfer: events, audit records and sequences (each with its own
request's context), the Idempotency-Key rules (a key that already exists, or appears twice in one
batch, leaves the batch and takes the one-request path, which waits and replays), and refusals
(a refused transfer never fails its neighbours). A database error fails the whole batch, after
the usual deadlock retries, and every request in it gets the same retryable answer (503).

This module is the queue and its batching (`GroupCommitter`); what waits in the queue is in
`group_commit_queue.py`, a batch's unit of work and each request's answer in
`group_commit_unit.py`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import structlog
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.core import limits
from ledger.core.context import WriteContext
from ledger.core.db import run_in_transaction
from ledger.core.errors import (
    ConfigurationError,
    IdempotencyKeyInUse,
    ServiceUnavailable,
)
from ledger.http.state import Services
from ledger.idempotency.store import IdempotencyClaim, StoredResponse
from ledger.posting.commands import TransferCommand
from observability import metrics
from transfers.group_commit_queue import Gate, Queued, Submission
from transfers.group_commit_unit import post_batch

log = structlog.get_logger("ledger.group_commit")
GROUP_COMMIT = "group_commit"  # its key in Services.extensions

# The queue's items stay importable from here, where callers and tests have found them.
__all__ = [
    "GROUP_COMMIT",
    "Gate",
    "GroupCommitter",
    "Queued",
    "Submission",
    "group_committer_of",
    "install_group_commit",
]


class GroupCommitter:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        batch_size_max: int = limits.GROUP_COMMIT_BATCH_SIZE_MAX,
        inflight_max: int = limits.GROUP_COMMIT_INFLIGHT_MAX,
        stagger_seconds: float = limits.GROUP_COMMIT_STAGGER_SECONDS,
        queue_max: int | None = None,
        queue_wait_max_seconds: float | None = None,
    ) -> None:
        # The queue's bounds are read when the committer is made (not when this module is
        # imported), so a test can lower them for one app.
        queue_max = limits.GROUP_COMMIT_QUEUE_MAX if queue_max is None else queue_max
        if queue_wait_max_seconds is None:
            queue_wait_max_seconds = limits.GROUP_COMMIT_QUEUE_WAIT_MAX_SECONDS
        if min(batch_size_max, inflight_max, queue_max) < 1 or queue_wait_max_seconds <= 0:
            raise ConfigurationError("group commit bounds must be positive")
        if stagger_seconds < 0:
            raise ConfigurationError("group commit stagger must not be negative")
        self.sessionmaker = sessionmaker
        self.batch_size_max = batch_size_max
        self.inflight_max = inflight_max
        self.queue_max = queue_max
        self.queue_wait_max_seconds = queue_wait_max_seconds
        self.queue: list[Queued] = []
        self.inflight = 0
        self.stagger_seconds = stagger_seconds
        # time.monotonic() when the latest batch started (it may have ended since, while an
        # older one runs on: the stagger is then counted from the later start, never shorter)
        self.youngest_started = 0.0
        self.scheduled = False
        self.stagger_timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # Accounts the running batches lock (a count per batch that touches them).
        self.busy: collections.Counter[uuid.UUID] = collections.Counter()
        # Accounts of queued requests that must wait (for a running batch, or behind an
        # earlier request on the same account).
        self.claimed: set[uuid.UUID] = set()

    async def submit(
        self,
        command: TransferCommand,
        ctx: WriteContext,
        claim: IdempotencyClaim | None,
        *,
        client_gone: Callable[[], Awaitable[object]] | None = None,
    ) -> StoredResponse | None:
        """The request's stored response (None: take the one-request path). What `client_gone`
        returns completes when the client has gone away: a request still queued then never runs.
        Raises ServiceUnavailable, before anything of it ran, when the queue is full, when it
        was not started in time, or when its client went away."""
        self._check_room()
        submission = Submission(
            command=command,
            ctx=ctx,
            claim=claim,
            span_context=trace.get_current_span().get_span_context(),
            context=contextvars.copy_context(),
            deadline=time.monotonic() + self.queue_wait_max_seconds,
        )
        self._enqueue(submission)
        return await self._outcome(submission, client_gone)

    @contextlib.asynccontextmanager
    async def exclusive(
        self,
        accounts: Iterable[uuid.UUID],
        *,
        client_gone: Callable[[], Awaitable[object]] | None = None,
    ) -> AsyncIterator[None]:
        """Hold these accounts in this process for the body of the `async with` (a batch
        request's own transaction), after every request queued before on any of them. Shed like
        `submit` (ServiceUnavailable, nothing run) while it waits."""
        self._check_room()
        gate = Gate(frozenset(accounts), deadline=time.monotonic() + self.queue_wait_max_seconds)
        self._enqueue(gate)
        try:
            await self._outcome(gate, client_gone)
        except asyncio.CancelledError:
            if gate.started:  # started just as its task was cancelled: let the others go
                self._leave(gate)
            raise
        try:
            yield
        finally:
            self._leave(gate)

    def _check_room(self) -> None:
        if len(self.queue) >= self.queue_max:
            _shed("queue_full")
            raise ServiceUnavailable(
                f"{len(self.queue)} requests are queued in this process; this one did not run"
            )

    def _enqueue(self, item: Queued) -> None:
        self.queue.append(item)
        metrics.GROUP_COMMIT_QUEUED.set(len(self.queue))
        if self._must_wait(item):
            # Nothing can start for it before a batch ends, and the end of a batch looks at the
            # queue again: no scan now (under a hot account with many clients, a scan per
            # arrival would cost the square of the queue).
            self.claimed.update(item.accounts)
        else:
            self._schedule()

    def _leave(self, gate: Gate) -> None:
        self._release([gate])
        if self.queue:
            self._schedule()

    async def _outcome(
        self, submission: Queued, client_gone: Callable[[], Awaitable[object]] | None
    ) -> StoredResponse | None:
        watcher = None if client_gone is None else asyncio.ensure_future(client_gone())
        waits: set[asyncio.Future[Any]] = {submission.future}
        if watcher is not None:
            waits.add(watcher)
        try:
            done, _ = await asyncio.wait(
                waits, timeout=self.queue_wait_max_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:  # the request's task itself was cancelled
            if self._withdraw(submission):
                _shed("cancelled")
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        if submission.future not in done and self._withdraw(submission):
            gone = watcher is not None and watcher in done
            _shed("cancelled" if gone else "deadline")
            raise ServiceUnavailable(
                "the client went away before this request started; it did not run"
                if gone
                else f"this request waited {self.queue_wait_max_seconds:g} s in the queue "
                "without starting; it did not run"
            )
        # Done, or started already: a started request is answered with its outcome, never
        # before it is known.
        return await submission.future

    def _withdraw(self, submission: Queued) -> bool:
        """Take a request that has not started out of the queue; False once it has started
        (or was answered). The accounts it claimed are recomputed at the next scan."""
        if submission.started or submission.future.done():
            return False
        self.queue.remove(submission)
        metrics.GROUP_COMMIT_QUEUED.set(len(self.queue))
        submission.future.cancel()
        if self.queue:
            self._schedule()  # a request behind it on its accounts may be free to go now
        else:
            self.claimed.clear()  # nobody waits, so no account is claimed (no scan would say so)
        return True

    def _must_wait(self, submission: Queued) -> bool:
        return any(a in self.busy or a in self.claimed for a in submission.accounts)

    def _schedule(self) -> None:
        # Start at the next turn of the loop, so requests arriving together leave together.
        if not self.scheduled and self.inflight < self.inflight_max:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._start_batches)

    def _staggered(self) -> bool:
        """True when a batch runs and the latest batch started less than the stagger ago: then a
        timer looks at the queue again once the stagger is over (unless a batch ends first and
        does)."""
        if self.inflight == 0:
            return False
        wait = self.youngest_started + self.stagger_seconds - time.monotonic()
        if wait <= 0:
            return False
        if self.stagger_timer is None:
            self.stagger_timer = asyncio.get_running_loop().call_later(wait, self._stagger_over)
        return True

    def _stagger_over(self) -> None:
        self.stagger_timer = None
        if self.queue:
            self._schedule()

    def _start_batches(self) -> None:
        self.scheduled = False
        while self.queue and self.inflight < self.inflight_max:
            if self._staggered():
                break  # the timer, or the end of a batch, looks again
            batch = self._take()
            if not batch:
                break  # everything queued waits for accounts a running batch holds
            self.inflight += 1
            self.youngest_started = time.monotonic()
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
        cannot be overtaken forever by newcomers on the same account. A gate that is free (no
        account of it held, claimed, or in this batch) starts here, on its own."""
        batch: list[Submission] = []
        in_batch: set[uuid.UUID] = set()  # accounts of this batch
        waiting: list[Queued] = []
        claimed: set[uuid.UUID] = set()  # accounts of requests that wait
        now = time.monotonic()
        for item in self.queue:
            if item.deadline <= now:
                # Past its deadline before its own timer said so: it never starts either.
                _shed("deadline")
                item.future.set_exception(
                    ServiceUnavailable("this request was not started in time; it did not run")
                )
                continue
            accounts = item.accounts
            free = not any(a in self.busy or a in claimed for a in accounts)
            if free and isinstance(item, Gate) and in_batch.isdisjoint(accounts):
                item.started = True
                self.busy.update(accounts)
                item.future.set_result(None)  # its caller runs its transaction now
            elif free and isinstance(item, Submission) and len(batch) < self.batch_size_max:
                batch.append(item)
                in_batch.update(accounts)
            else:
                waiting.append(item)
                claimed.update(accounts)
        self.queue = waiting
        self.claimed = claimed
        metrics.GROUP_COMMIT_QUEUED.set(len(waiting))
        for submission in batch:
            submission.started = True
            self.busy.update(submission.accounts)
        return batch

    def _release(self, batch: list[Submission] | list[Gate]) -> None:
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
                    lambda session: post_batch(session, batch),
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


def _shed(reason: str) -> None:
    # Counted, not logged: under a flood a line per shed request would be more load (each one
    # still has its access line, status 503).
    metrics.REQUESTS_SHED.labels(reason=reason).inc()


def install_group_commit(services: Services, committer: GroupCommitter) -> None:
    services.extensions[GROUP_COMMIT] = committer


def group_committer_of(services: Services) -> GroupCommitter | None:
    committer: GroupCommitter | None = services.extensions.get(GROUP_COMMIT)
    return committer
