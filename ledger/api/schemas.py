"""What the operator API answers (msgspec Structs): the event feed's page, health, readiness.

The feed's envelopes are sent as stored (`outbox/writer.py::envelope`, kept as text);
`EventEnvelope` is their documented shape, the contract of docs/events.md."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import msgspec


class EventEnvelope(msgspec.Struct):
    """A CloudEvents 1.0 envelope. `sequence` (an account event's version, zero-padded to 20
    digits) and `traceparent` (of the request that made the change) appear only when set."""

    specversion: Literal["1.0"]
    id: uuid.UUID
    source: str
    type: str
    subject: uuid.UUID
    time: dt.datetime
    datacontenttype: Literal["application/json"]
    data: dict[str, Any]
    sequence: str | msgspec.UnsetType = msgspec.UNSET
    traceparent: str | msgspec.UnsetType = msgspec.UNSET


class EventPage(msgspec.Struct):
    """`next_cursor` is null when the page is not full; `resume_cursor` continues after the last
    event returned (null only before any event was seen)."""

    data: list[EventEnvelope]
    next_cursor: str | None
    resume_cursor: str | None


class HealthOut(msgspec.Struct):
    status: Literal["ok"]


class ReadyOut(msgspec.Struct):
    """`ready` with the schema's migration, or `unavailable` (503) saying why: the `database`
    is unreachable or not migrated, or its `migration` is not the `expected` one."""

    status: Literal["ready", "unavailable"]
    migration: str | msgspec.UnsetType | None = msgspec.UNSET
    expected: str | msgspec.UnsetType = msgspec.UNSET
    database: Literal["unreachable", "not migrated"] | msgspec.UnsetType = msgspec.UNSET
