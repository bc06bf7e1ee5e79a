"""One endpoint's lane: its own task, its own HTTP connections and its own bounds, so that
what happens to one endpoint (slow, failing, hanging) is its own business.

A step first retries the due deliveries (the oldest pending one of each subject whose time has
come), then takes the next events from the feed after the endpoint's cursor:
- an event whose subject has an older pending delivery waits behind it (recorded, not sent);
- the others are sent, one subject's events one after the other, different subjects at once
  (at most WEBHOOK_ENDPOINT_CONCURRENCY_MAX requests in flight);
- then one transaction records every outcome and moves the cursor past the batch.
A crash before that transaction sends the batch again after the restart: at least once, and
duplicates only across such a fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.core import limits
from ledger.core.errors import LedgerError
from ledger.webhooks import deliveries as store
from ledger.webhooks import repository as repo
from ledger.webhooks.delivery import plan
from ledger.webhooks.delivery.sender import Outcome, Signer, attempt
from ledger.webhooks.rules import matches
from observability import metrics
from outbox import repository as feed

log = structlog.get_logger("ledger.webhooks.lane")
T = TypeVar("T")
# Runs `work(conn)` in one transaction on the dispatcher's lock connection.
RunOnLeader = Callable[[Callable[[AsyncConnection], Awaitable[T]]], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class LaneConfig:
    endpoint_id: uuid.UUID
    url: str
    event_types: tuple[str, ...]
    secrets: tuple[str, ...]  # valid secrets, newest first; empty when none could be opened
    secrets_error: str | None  # why the secrets could not be opened: the lane sends nothing


@dataclass(frozen=True, slots=True)
class LaneBounds:
    attempt_timeout_seconds: float = limits.WEBHOOK_ATTEMPT_TIMEOUT_SECONDS
    concurrency: int = limits.WEBHOOK_ENDPOINT_CONCURRENCY_MAX
    batch_events: int = limits.WEBHOOK_BATCH_EVENTS_MAX
    batch_bytes: int = limits.WEBHOOK_BATCH_BYTES_MAX
    retry_batch: int = limits.WEBHOOK_RETRY_BATCH_MAX
    response_bytes_max: int = limits.WEBHOOK_RESPONSE_BYTES_MAX


class Lane:
    def __init__(
        self,
        config: LaneConfig,
        run: RunOnLeader[Any],
        session: aiohttp.ClientSession,
        bounds: LaneBounds,
    ) -> None:
        self.config = config
        self.run = run
        self.bounds = bounds
        # The endpoint's own client: at most `bounds.concurrency` connections, kept alive
        # between deliveries; a slot is taken per request in flight (the concurrency bound).
        self.session = session
        self._slots = asyncio.Semaphore(bounds.concurrency)
        # While the endpoint fails (its last attempt did not deliver), one request at a time:
        # a hanging or refusing endpoint then holds one connection, not all of its slots.
        self._failing = False
        self._probe = asyncio.Lock()
        self.wake = asyncio.Event()
        self.signer = Signer(config.secrets)
        self.label = str(config.endpoint_id)
        self._said_secrets = False
        self._counted_at = 0.0

    # -- the loop ------------------------------------------------------------------------------

    async def run_forever(self) -> None:
        while True:
            self.wake.clear()
            try:
                done = await self.step()
            except LedgerError as exc:  # the database is away: the dispatcher deals with it
                log.warning("webhook.lane_unavailable", endpoint_id=self.label, error=exc.code)
                done = 0
            except Exception:
                log.exception("webhook.lane_failed", endpoint_id=self.label)
                done = 0
            if done:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), limits.WEBHOOK_LANE_IDLE_SECONDS)

    async def step(self) -> int:
        if self.config.secrets_error is not None or not self.signer:
            if not self._said_secrets:
                log.error(
                    "webhook.secret_unreadable",
                    endpoint_id=self.label,
                    detail=self.config.secrets_error or "no valid secret",
                )
                self._said_secrets = True
            return 0
        done = await self._retry_due()
        done += await self._take_new()
        await self._count_pending()
        return done

    # -- retries -------------------------------------------------------------------------------

    async def _retry_due(self) -> int:
        endpoint_id = self.config.endpoint_id
        now = dt.datetime.now(dt.UTC)

        async def read(conn: AsyncConnection) -> list[store.Delivery]:
            due = await store.due(conn, endpoint_id, now, self.bounds.retry_batch)
            oldest = await store.oldest_pending_by_subject(
                conn, endpoint_id, (d.subject for d in due)
            )
            heads = [d for d in due if oldest.get(d.subject) == d.position]
            behind = [d.position for d in due if oldest.get(d.subject) != d.position]
            await store.set_waiting(conn, endpoint_id, behind)
            return heads

        heads = await self.run(read)
        if not heads:
            return 0
        outcomes = await asyncio.gather(
            *(self._send(d.event_id, (d.envelope or "").encode("utf-8")) for d in heads)
        )
        finished = dt.datetime.now(dt.UTC)

        async def record(conn: AsyncConnection) -> None:
            resolved = []
            attempts = []
            for delivery, outcome in zip(heads, outcomes, strict=True):
                values = plan.after_retry(
                    delivery.attempts, delivery.deadline_at, finished, outcome
                )
                attempts.append((delivery.position, values))
                if values.get("status") in (store.DELIVERED, store.FAILED):
                    resolved.append(delivery.subject)
                self._count(outcome, values.get("status"), None)
            await store.record_attempts(conn, endpoint_id, attempts)
            await store.promote_next(conn, endpoint_id, resolved, finished)

        await self.run(record)
        return len(heads)

    # -- new events ----------------------------------------------------------------------------

    async def _take_new(self) -> int:
        endpoint_id = self.config.endpoint_id

        async def read(conn: AsyncConnection) -> tuple[int, list[plan.FeedEvent], dict[str, int]]:
            endpoint = await repo.get_endpoint(conn, endpoint_id)
            if endpoint is None or not endpoint.enabled:
                return -1, [], {}
            rows = await feed.feed_page(conn, endpoint.cursor, self.bounds.batch_events)
            if rows and rows[0][0] != endpoint.cursor + 1 and endpoint.cursor > 0:
                log.error(
                    "webhook.events_expired",
                    endpoint_id=self.label,
                    cursor=endpoint.cursor,
                    first=rows[0][0],
                )
            events = plan.read_events(rows, self.bounds.batch_bytes)
            wanted = [e for e in events if matches(e.head.type, self.config.event_types)]
            oldest = await store.oldest_pending_by_subject(
                conn, endpoint_id, (e.head.subject for e in wanted)
            )
            return endpoint.cursor, events, oldest

        cursor, events, oldest = await self.run(read)
        if not events:
            return 0
        wanted = [e for e in events if matches(e.head.type, self.config.event_types)]
        outcomes = await self._send_in_subject_order(wanted, oldest)
        now = dt.datetime.now(dt.UTC)
        rows = [
            plan.row(endpoint_id, event, now, outcomes.get(event.position))
            for event in wanted
            if oldest.get(event.head.subject) != event.position  # pending already: left as is
        ]

        async def record(conn: AsyncConnection) -> bool:
            moved = await store.advance_cursor(
                conn, endpoint_id, expected=cursor, to=events[-1].position, now=now
            )
            if moved:
                await store.upsert(conn, rows)
            return moved

        if not await self.run(record):
            return 0  # a replay moved the cursor meanwhile: it takes these events again
        for event in wanted:
            outcome = outcomes.get(event.position)
            if outcome is not None:
                self._count(outcome, store.DELIVERED if outcome.delivered else None, event)
        return len(events)

    async def _send_in_subject_order(
        self, events: list[plan.FeedEvent], oldest: dict[str, int]
    ) -> dict[int, Outcome]:
        """Send each subject's events in feed order, subjects side by side. An event behind an
        older pending one of its subject (before this batch, or failed in it) is not sent."""
        chains: dict[str, list[plan.FeedEvent]] = {}
        for event in events:
            pending_at = oldest.get(event.head.subject)
            if pending_at is not None and pending_at <= event.position:
                continue
            chains.setdefault(event.head.subject, []).append(event)
        outcomes: dict[int, Outcome] = {}

        async def chain(items: list[plan.FeedEvent]) -> None:
            for event in items:
                outcome = await self._send(event.head.id, event.body)
                outcomes[event.position] = outcome
                if not outcome.delivered:
                    return  # the rest of this subject waits behind it

        await asyncio.gather(*(chain(items) for items in chains.values()))
        return outcomes

    # -- one request ---------------------------------------------------------------------------

    async def _send(self, event_id: uuid.UUID, body: bytes) -> Outcome:
        if self._failing:
            async with self._probe:
                return await self._send_now(event_id, body)
        return await self._send_now(event_id, body)

    async def _send_now(self, event_id: uuid.UUID, body: bytes) -> Outcome:
        async with self._slots:
            outcome = await attempt(
                self.session,
                self.config.url,
                event_id=str(event_id),
                body=body,
                signer=self.signer,
                timeout_seconds=self.bounds.attempt_timeout_seconds,
                response_bytes_max=self.bounds.response_bytes_max,
            )
        self._failing = not outcome.delivered
        if not outcome.delivered:
            log.info(
                "webhook.attempt_failed",
                endpoint_id=self.label,
                event_id=str(event_id),
                status_code=outcome.status_code,
                error=outcome.error,
            )
        return outcome

    # -- metrics -------------------------------------------------------------------------------

    def _count(self, outcome: Outcome, status: str | None, event: plan.FeedEvent | None) -> None:
        if outcome.delivered:
            metrics.WEBHOOK_DELIVERIES.labels(self.label, "delivered").inc()
            if event is not None and event.head.time is not None:
                lag = (dt.datetime.now(dt.UTC) - event.head.time).total_seconds()
                metrics.WEBHOOK_LAG.labels(self.label).observe(max(0.0, lag))
        elif status == store.FAILED:
            metrics.WEBHOOK_DELIVERIES.labels(self.label, "failed").inc()
        else:
            metrics.WEBHOOK_DELIVERIES.labels(self.label, "retrying").inc()

    async def _count_pending(self) -> None:
        """The retrying gauge, read at most once per WEBHOOK_LANE_IDLE_SECONDS."""
        if time.monotonic() - self._counted_at < limits.WEBHOOK_LANE_IDLE_SECONDS:
            return
        self._counted_at = time.monotonic()
        endpoint_id = self.config.endpoint_id

        async def count(conn: AsyncConnection) -> int:
            return await store.count_pending(conn, endpoint_id, limits.WEBHOOK_PENDING_COUNT_MAX)

        metrics.WEBHOOK_RETRYING.labels(self.label).set(await self.run(count))

    def forget_metrics(self) -> None:
        for outcome in ("delivered", "retrying", "failed"):
            with contextlib.suppress(KeyError):
                metrics.WEBHOOK_DELIVERIES.remove(self.label, outcome)
        for metric in (metrics.WEBHOOK_RETRYING, metrics.WEBHOOK_LAG):
            with contextlib.suppress(KeyError):
                metric.remove(self.label)
