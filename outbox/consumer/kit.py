"""The consumer kit: an idempotent, gap-checking consumer of ledger events in a few lines.

    async def on_event(session: AsyncSession, event: Event) -> None:
        ...  # update your tables with `session`; never commit here

    consumer = EventConsumer(settings, group="billing", handler=on_event)
    await consumer.run(stop)  # `stop`: an asyncio.Event, set on SIGTERM

What it guarantees, per consumer group:
- Each poll is applied in ONE transaction of the consumer's database: for every record, the inbox
  row (group, event id), the subject's last sequence and the handler's writes. Kafka offsets are
  committed only after that transaction commits. A crash anywhere replays records, never skips.
- Duplicates (the relay publishes at least once) are dropped by the inbox before the handler runs.
- Each account's `sequence` must run 1, 2, 3, ...: a jump is a lost event, logged as the error
  `consumer.sequence_gap` and counted in `ledger_consumer_sequence_gaps_total` (the event itself is
  still applied: its data is a full snapshot). A sequence at or below the last one applied is
  stale and skipped.
- A record that is not a ledger envelope is logged (`consumer.invalid_record`) and skipped; a
  handler may raise `InvalidEvent` to do the same (its writes for that event are rolled back).
  Any other handler error rolls the whole poll back; it is retried with backoff.
- Each event is handled inside a CONSUMER span whose parent is the record's `traceparent`, so one
  trace runs from the HTTP request that made the change to its consumers.
- `run` returns after the poll in progress when `stop` is set: offsets committed, group left.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ledger.core import limits
from ledger.core.backoff import jittered_backoff_ms
from ledger.core.db import run_in_transaction
from ledger.core.errors import LedgerError
from ledger.core.settings import Settings
from observability import metrics
from outbox.consumer import inbox
from outbox.kafka import KafkaOptions, consumer_span, header_value, make_consumer

log = structlog.get_logger("outbox.consumer")


class InvalidEvent(Exception):
    """The record is not an event this consumer can apply; it is logged and skipped."""


@dataclass(frozen=True, slots=True)
class Event:
    """One ledger event as a handler sees it (the CloudEvents envelope, decoded)."""

    id: uuid.UUID
    type: str
    subject: str
    time: str
    data: dict[str, Any]
    sequence: int | None
    traceparent: str | None
    group: str  # the consumer group applying it
    topic: str
    partition: int
    offset: int
    envelope: dict[str, Any] = field(repr=False)


Handler = Callable[[AsyncSession, Event], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Gap:
    subject: str
    expected: int
    got: int


@dataclass(slots=True)
class PollResult:
    """What one poll did: records seen, outcomes by kind, gaps found."""

    records: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    gaps: list[Gap] = field(default_factory=list)


def parse_event(record: Any, group: str) -> Event:
    """Decode a Kafka record into an Event, or raise InvalidEvent."""
    try:
        envelope = msgspec.json.decode(record.value or b"")
    except msgspec.DecodeError as exc:
        raise InvalidEvent("the value is not JSON") from exc
    if not isinstance(envelope, dict) or envelope.get("specversion") != "1.0":
        raise InvalidEvent("the value is not a CloudEvents 1.0 envelope")
    try:
        event_id = uuid.UUID(str(envelope["id"]))
        event_type = str(envelope["type"])
        subject = str(envelope["subject"])
        data = envelope.get("data")
        raw_sequence = envelope.get("sequence")
        sequence = None if raw_sequence is None else int(str(raw_sequence))
    except (KeyError, ValueError) as exc:
        raise InvalidEvent(f"the envelope lacks or garbles a field: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidEvent("the envelope's data is not an object")
    if sequence is not None and sequence < 1:
        raise InvalidEvent("the sequence is not positive")
    traceparent = header_value(record.headers, "traceparent") or envelope.get("traceparent")
    return Event(
        id=event_id,
        type=event_type,
        subject=subject,
        time=str(envelope.get("time", "")),
        data=data,
        sequence=sequence,
        traceparent=traceparent if isinstance(traceparent, str) else None,
        group=group,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        envelope=envelope,
    )


class EventConsumer:
    """One member of a consumer group. `run` drives it; tests may call `poll_once` directly."""

    def __init__(
        self,
        settings: Settings,
        *,
        group: str,
        handler: Handler,
        topic: str | None = None,
        options: KafkaOptions | None = None,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        if not (1 <= len(group) <= 255):
            raise ValueError("the consumer group name must be 1..255 characters")
        self.settings = settings
        self.group = group
        self.handler = handler
        self.topic = topic or settings.kafka_topic
        self.options = options or KafkaOptions()
        self._sessionmaker = sessionmaker
        self._engine: AsyncEngine | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._failures = 0

    async def start(self) -> None:
        if self._sessionmaker is None:
            from ledger.core.db import create_engine, create_sessionmaker

            self._engine = create_engine(self.settings, pool_size=2)
            self._sessionmaker = create_sessionmaker(self._engine)
        consumer = make_consumer(self.settings, self.group, self.topic, self.options)
        await consumer.start()
        self._consumer = consumer
        log.info("consumer.started", group=self.group, topic=self.topic)

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()  # leaves the group: its partitions move on at once
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        log.info("consumer.stopped", group=self.group)

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            while not stop.is_set():
                try:
                    await self.poll_once()
                except (LedgerError, KafkaError, OSError) as exc:
                    await self._back_off(exc, stop)
                except Exception as exc:  # a handler bug: the poll was rolled back, retry later
                    log.exception("consumer.handler_failed", group=self.group)
                    await self._back_off(exc, stop)
        finally:
            await self.stop()

    async def poll_once(
        self, timeout_ms: int = limits.KAFKA_CONSUMER_POLL_TIMEOUT_MS
    ) -> PollResult:
        """Fetch one bounded batch, apply it in one transaction, then commit its offsets."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("start() the consumer first")
        fetched = await consumer.getmany(
            timeout_ms=timeout_ms, max_records=self.options.max_poll_records
        )
        records = [record for tp in sorted(fetched) for record in fetched[tp]]
        if not records:
            return PollResult()
        try:
            result = await run_in_transaction(self._require_sessionmaker(), self._applier(records))
        except BaseException:
            # Nothing was committed: read the same records again on the next poll (a partition
            # taken away by a rebalance meanwhile is read again by its new owner anyway).
            for tp, batch in fetched.items():
                with contextlib.suppress(IllegalStateError):
                    consumer.seek(tp, batch[0].offset)
            raise
        # Reported once the transaction has committed and before the offsets are: a replay of
        # these records is all duplicates, so a gap found now is never found again.
        self._report(result)
        offsets = {tp: OffsetAndMetadata(batch[-1].offset + 1, "") for tp, batch in fetched.items()}
        await consumer.commit(offsets)
        self._failures = 0
        return result

    def _require_sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        if self._sessionmaker is None:
            raise RuntimeError("start() the consumer first")
        return self._sessionmaker

    def _applier(self, records: list[Any]) -> Callable[[AsyncSession], Awaitable[PollResult]]:
        async def apply(session: AsyncSession) -> PollResult:
            result = PollResult(records=len(records))  # fresh on every retry of the transaction
            now = dt.datetime.now(dt.UTC)
            for record in records:
                try:
                    event = parse_event(record, self.group)
                except InvalidEvent as exc:
                    log.error(
                        "consumer.invalid_record",
                        group=self.group,
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        error=str(exc),
                    )
                    result.outcomes["invalid"] += 1
                    continue
                with consumer_span(
                    f"{event.type} process",
                    event.traceparent,
                    **{
                        "messaging.system": "kafka",
                        "messaging.destination.name": event.topic,
                        "messaging.consumer.group.name": self.group,
                        "messaging.message.id": str(event.id),
                    },
                ):
                    outcome = await self._apply_one(session, event, now, result.gaps)
                result.outcomes[outcome] += 1
            return result

        return apply

    async def _apply_one(
        self, session: AsyncSession, event: Event, now: dt.datetime, gaps: list[Gap]
    ) -> str:
        if not await inbox.claim_event(session, self.group, event.id, now):
            return "duplicate"
        if event.sequence is not None:
            last = await inbox.last_sequence(session, self.group, event.subject)
            if last is not None and event.sequence <= last:
                log.warning(
                    "consumer.sequence_stale",
                    group=self.group,
                    subject=event.subject,
                    last=last,
                    got=event.sequence,
                    event_id=str(event.id),
                )
                return "stale"
            expected = 1 if last is None else last + 1
            if event.sequence != expected:
                gaps.append(Gap(event.subject, expected, event.sequence))
            await inbox.save_sequence(session, self.group, event.subject, event.sequence, now)
        try:
            async with session.begin_nested():
                await self.handler(session, event)
        except InvalidEvent as exc:
            log.error(
                "consumer.invalid_event", group=self.group, event_id=str(event.id), error=str(exc)
            )
            return "invalid"
        return "applied"

    def _report(self, result: PollResult) -> None:
        """Counted and logged only after the commit: a rolled-back poll never counts twice."""
        for outcome, count in result.outcomes.items():
            metrics.CONSUMER_EVENTS.labels(outcome=outcome).inc(count)
        for gap in result.gaps:
            metrics.CONSUMER_SEQUENCE_GAPS.inc()
            log.error(
                "consumer.sequence_gap",
                group=self.group,
                subject=gap.subject,
                expected=gap.expected,
                got=gap.got,
                missing=gap.got - gap.expected,
            )
        log.debug("consumer.applied", group=self.group, **dict(result.outcomes))

    async def _back_off(self, exc: BaseException, stop: asyncio.Event) -> None:
        self._failures += 1
        delay_ms = jittered_backoff_ms(
            self._failures,
            initial_ms=limits.CONSUMER_RETRY_BACKOFF_INITIAL_MS,
            max_ms=limits.CONSUMER_RETRY_BACKOFF_MAX_MS,
        )
        log.warning(
            "consumer.poll_failed",
            group=self.group,
            error=type(exc).__name__,
            failures=self._failures,
            retry_in_ms=round(delay_ms),
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay_ms / 1000)
