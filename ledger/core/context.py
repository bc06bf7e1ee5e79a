"""Who is writing, and from which request: carried into audit records, events and logs."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class Actor:
    id: uuid.UUID | None
    name: str
    role: str

    @classmethod
    def cli(cls) -> Actor:
        return cls(id=None, name="cli", role="admin")

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls(id=None, name=name, role="admin")


@dataclass(frozen=True, slots=True)
class WriteContext:
    actor: Actor
    request_id: str | None = None
    trace_id: str | None = None
    traceparent: str | None = None
    client_addr: str | None = None
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def at(self, now: dt.datetime) -> WriteContext:
        """The same context at `now`: the posting engine's transaction time, read from the
        database clock once its locks are held (so time follows sequence on every account)."""
        return replace(self, now=now)

    def at_now(self) -> WriteContext:
        """The same context with a fresh clock (each retry of a transaction takes a new now)."""
        return WriteContext(
            actor=self.actor,
            request_id=self.request_id,
            trace_id=self.trace_id,
            traceparent=self.traceparent,
            client_addr=self.client_addr,
        )
