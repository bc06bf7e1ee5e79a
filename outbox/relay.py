"""The outbox relay: publishes committed events, then gives them their feed positions.

One relay is active at a time. It holds a session-level `pg_try_advisory_lock` on its own
connection; a second worker's relay finds the lock taken and stands by, retrying every poll
interval, and takes over when the first one's connection ends (a killed process included).

A step, on the lock holder's connection:
1. read the next events: those of the window the last batch row left off in, in insert-id order
   after its cursor, or when it is finished, of the next window (the transactions that committed
   since: outbox/repository.py);
2. publish them to Kafka, keyed by subject, one batch in flight per partition (so a retry never
   overtakes a later record of the same subject) with `acks="all"`, and wait for every ack;
3. insert one batch row: the events' ids, which get the next gapless feed positions, and the
   window with its cursor. The events themselves are never written again.

A crash between 2 and 3 publishes the events again on restart (the last batch row still names
the same window and cursor): at least once, never lost. An event whose transaction commits late
behind a higher id is in a later window and taken then.
Without Kafka, step 2 is skipped: events still reach the HTTP feed. Wake-ups come from
LISTEN/NOTIFY on `ledger_outbox` (the writer notifies in the business transaction); the poll
interval is the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
from typing import Any

import psycopg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.core import limits
from ledger.core.backoff import jittered_backoff_ms
from ledger.core.db import connection_defaults, run_in_transaction
from ledger.core.errors import ServiceUnavailable
from ledger.core.leader import Leadership
from ledger.core.locks import LockClass
from ledger.core.settings import Settings
from observability import metrics
from outbox import repository as repo
from outbox.kafka import KafkaOptions, partition_for, record_headers, start_producer
from outbox.writer import NOTIFY_CHANNEL

log = structlog.get_logger("outbox.relay")

KAFKA_ERRORS = (KafkaError, OSError, TimeoutError)


class RecordTooLarge(Exception):
    """One event does not fit in a Kafka record batch: the limits on metadata make this a bug."""


class Relay:
    """The relay job. `step` does one bounded batch and returns how many events it published;
    the worker loop calls it again at once while there is work, else waits for `wake`."""

    def __init__(
        self,
        settings: Settings,
        *,
        options: KafkaOptions | None = None,
        batch_size: int = limits.OUTBOX_RELAY_BATCH_SIZE,
    ) -> None:
        self.settings = settings
        self.options = options or KafkaOptions()
        self.batch_size = batch_size
        self.wake = asyncio.Event()
        self.kafka_enabled = settings.kafka_bootstrap_servers is not None
        # The lock and the connection every step runs on (ledger/core/leader.py).
        self.leadership = Leadership(
            settings, f"ledger-relay-{os.getpid()}", LockClass.OUTBOX_RELAY
        )
        self._said_standby = False
        self._listen_task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._failures = 0
        self._retry_at = 0.0

    @property
    def leading(self) -> bool:
        return self.leadership.leading

    # -- the step ------------------------------------------------------------------------------

    async def step(self) -> int:
        if not await self._lead():
            return 0
        self._ensure_listener()
        if time.monotonic() < self._retry_at:
            return 0
        window, rows = await self._on_lock_connection(
            lambda conn: repo.fetch_unpublished(conn, self.batch_size)
        )
        if not rows:
            return 0
        if self.kafka_enabled and not await self._publish(rows):
            return 0
        ids = [row.id for row in rows]
        now = dt.datetime.now(dt.UTC)
        last_of_window = len(rows) < self.batch_size
        await self._on_lock_connection(
            lambda conn: repo.mark_published(conn, window, ids, now, last_of_window=last_of_window)
        )
        metrics.OUTBOX_PUBLISHED.inc(len(ids))
        log.debug("relay.published", count=len(ids), first_id=ids[0], last_id=ids[-1])
        return len(ids)

    # -- leadership ----------------------------------------------------------------------------

    async def _lead(self) -> bool:
        was_leading = self.leadership.leading
        try:
            leading = await self.leadership.lead()
        except ServiceUnavailable:
            self._stop_listener()
            raise
        if not leading:
            self._stop_listener()
            if not self._said_standby:
                log.info("relay.standby", detail="another relay holds the lock")
                self._said_standby = True
            return False
        if not was_leading:
            log.info("relay.leading", kafka=self.kafka_enabled, topic=self.settings.kafka_topic)
            self._said_standby = False
            self.wake.set()
        return True

    async def _on_lock_connection(self, work: Any) -> Any:
        """Run `work(conn)` in one transaction on the lock holder's connection. Any database
        failure gives the lock up (the connection is closed) and is retried as a new leader."""
        try:
            return await self.leadership.run(work)
        except ServiceUnavailable:
            self._stop_listener()
            raise

    def _stop_listener(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            self._listen_task = None

    # -- wake-ups ------------------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        if self._listen_task is None or self._listen_task.done():
            self._listen_task = asyncio.create_task(self._listen(), name="outbox-relay-listen")

    async def _listen(self) -> None:
        try:
            # LISTEN is session state: the direct URL, never a transaction pooler.
            url = self.settings.direct_database.conninfo(connection_defaults("ledger-relay-listen"))
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
            async with conn:
                await repo.listen(conn, NOTIFY_CHANNEL)
                self.wake.set()  # a commit before LISTEN took effect is seen by the next step
                async for _notify in conn.notifies():
                    self.wake.set()
        except (psycopg.Error, OSError) as exc:
            # The poll interval keeps the relay going; the next step listens again.
            log.warning("relay.listen_lost", error=type(exc).__name__)

    # -- Kafka ---------------------------------------------------------------------------------

    async def _publish(self, rows: list[repo.UnpublishedEvent]) -> bool:
        """Publish every row and wait for every ack; False (and a backoff) when any failed."""
        bound_s = self.options.request_timeout_ms / 1000 * 2 + 5
        try:
            producer = await asyncio.wait_for(self._ensure_producer(), bound_s)
            partitions = await asyncio.wait_for(
                producer.partitions_for(self.settings.kafka_topic), bound_s
            )
            if not partitions:
                raise KafkaError(f"topic {self.settings.kafka_topic} has no partitions")
            by_partition: dict[int, list[repo.UnpublishedEvent]] = {}
            for row in rows:
                partition = partition_for(row.subject.encode(), list(partitions))
                by_partition.setdefault(partition, []).append(row)
            results = await asyncio.gather(
                *(
                    self._send_partition(producer, partition, part_rows, bound_s)
                    for partition, part_rows in by_partition.items()
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        except KAFKA_ERRORS as exc:
            await self._publish_failed(exc)
            return False
        if self._failures:
            log.info("relay.publish_recovered", after_failures=self._failures)
        self._failures = 0
        return True

    async def _send_partition(
        self,
        producer: AIOKafkaProducer,
        partition: int,
        rows: list[repo.UnpublishedEvent],
        bound_s: float,
    ) -> None:
        """One partition's rows in order, one batch in flight at a time."""
        batch = producer.create_batch()
        for row in rows:
            record = {
                "key": row.subject.encode(),
                # The stored bytes, in the writer's key order: a reparse would reprint numbers.
                "value": row.envelope,
                "timestamp": int(row.created_at.timestamp() * 1000),
                "headers": record_headers(row.traceparent),
            }
            if batch.append(**record) is None:
                if batch.record_count() == 0:
                    raise RecordTooLarge(f"outbox row {row.id} does not fit in a record batch")
                await self._send_batch(producer, batch, partition, bound_s)
                batch = producer.create_batch()
                if batch.append(**record) is None:
                    raise RecordTooLarge(f"outbox row {row.id} does not fit in a record batch")
        if batch.record_count():
            await self._send_batch(producer, batch, partition, bound_s)

    async def _send_batch(
        self, producer: AIOKafkaProducer, batch: Any, partition: int, bound_s: float
    ) -> None:
        delivery = await producer.send_batch(batch, self.settings.kafka_topic, partition=partition)
        # shield: a timeout must not cancel aiokafka's own future (its sender sets it later).
        await asyncio.wait_for(asyncio.shield(delivery), bound_s)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = await start_producer(self.settings, self.options)
            log.info("relay.kafka_connected", bootstrap=self.settings.kafka_bootstrap_servers)
        return self._producer

    async def _publish_failed(self, exc: BaseException) -> None:
        self._failures += 1
        metrics.OUTBOX_PUBLISH_FAILURES.inc()
        delay_ms = jittered_backoff_ms(
            self._failures,
            initial_ms=limits.OUTBOX_RELAY_BACKOFF_INITIAL_MS,
            max_ms=limits.OUTBOX_RELAY_BACKOFF_MAX_MS,
        )
        self._retry_at = time.monotonic() + delay_ms / 1000
        log.warning(
            "relay.publish_failed",
            error=type(exc).__name__,
            detail=str(exc)[:200],
            failures=self._failures,
            retry_in_ms=round(delay_ms),
        )
        if self._failures >= limits.OUTBOX_RELAY_FAILURES_BEFORE_RECONNECT:
            await self._drop_producer()

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self.options.request_timeout_ms / 1000 + 5)

    # -- shutdown ------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(BaseException):
                await self._listen_task
            self._listen_task = None
        await self._drop_producer()
        await self.leadership.close()


async def trim_published_step(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> int:
    """Retention: delete one bounded batch of published events older than the setting."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=settings.event_retention_hours)

    async def work(session: AsyncSession) -> int:
        return await repo.trim_published(session, cutoff, limits.OUTBOX_RETENTION_BATCH_SIZE)

    deleted = await run_in_transaction(sessionmaker, work)
    if deleted:
        log.info("outbox.trimmed", count=deleted, cutoff=cutoff.isoformat())
    return deleted
