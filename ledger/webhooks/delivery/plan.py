"""A lane's batch: the feed's envelopes read, which to send now and which wait, and the
delivery rows that record what came of it."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from ledger.core import limits
from ledger.core.backoff import jittered_backoff_ms
from ledger.webhooks.deliveries import DELIVERED, FAILED, PENDING
from ledger.webhooks.delivery.sender import Outcome


class EnvelopeHead(msgspec.Struct):
    """The fields of a CloudEvents envelope a lane needs; the rest is sent as stored."""

    id: uuid.UUID
    type: str
    subject: str
    time: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class FeedEvent:
    position: int
    head: EnvelopeHead
    body: bytes  # the envelope as stored: sent and signed as it is


def read_events(rows: list[tuple[int, bytes]], bytes_max: int) -> list[FeedEvent]:
    """Parse the heads of a feed page, keeping a prefix of at most `bytes_max` envelope bytes
    (at least one event): the rest is read again by the next step."""
    events: list[FeedEvent] = []
    size = 0
    for position, body in rows:
        size += len(body)
        if events and size > bytes_max:
            break
        head = msgspec.json.decode(body, type=EnvelopeHead)
        events.append(FeedEvent(position, head, body))
    return events


def retry_delay(attempts: int) -> dt.timedelta:
    """After the `attempts`-th failed attempt: about 1 s, doubling, at most 1 h (jittered)."""
    delay_ms = jittered_backoff_ms(
        attempts, initial_ms=limits.WEBHOOK_RETRY_INITIAL_MS, max_ms=limits.WEBHOOK_RETRY_MAX_MS
    )
    # Equal jitter draws from the upper half: at the cap, keep 1 h the most, never less than half.
    return dt.timedelta(milliseconds=delay_ms)


def row(
    endpoint_id: uuid.UUID,
    event: FeedEvent,
    now: dt.datetime,
    outcome: Outcome | None,
) -> dict[str, Any]:
    """The delivery row of a fresh event: sent (`outcome`), or waiting (None) behind an older
    pending event of its subject."""
    values: dict[str, Any] = {
        "endpoint_id": endpoint_id,
        "position": event.position,
        "event_id": event.head.id,
        "event_type": event.head.type,
        "subject": event.head.subject,
        "deadline_at": now + dt.timedelta(seconds=limits.WEBHOOK_RETRY_WINDOW_SECONDS),
        "created_at": now,
        "updated_at": now,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": None,
        "last_attempt_at": None,
        "last_status_code": None,
        "last_error": None,
        "envelope": event.body.decode("utf-8"),
    }
    if outcome is None:
        return values
    values.update(
        attempts=1,
        last_attempt_at=now,
        last_status_code=outcome.status_code,
        last_error=outcome.error,
    )
    if outcome.delivered:
        values.update(status=DELIVERED, envelope=None)
    else:
        values["next_attempt_at"] = now + retry_delay(1)
    return values


def after_retry(
    attempts: int, deadline: dt.datetime, now: dt.datetime, outcome: Outcome
) -> dict[str, Any]:
    """The changes to a pending delivery after one more attempt."""
    values: dict[str, Any] = {
        "attempts": attempts + 1,
        "last_attempt_at": now,
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
        "updated_at": now,
    }
    if outcome.delivered:
        values.update(status=DELIVERED, next_attempt_at=None, envelope=None)
    elif now >= deadline:
        values.update(status=FAILED, next_attempt_at=None)
    else:
        values["next_attempt_at"] = min(now + retry_delay(attempts + 1), deadline)
    return values
