"""The outbox writer: events become rows in the business transaction (never published here)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core.bulk import BulkWriter
from ledger.core.context import WriteContext
from ledger.core.db import after_commit
from ledger.core.ids import new_id
from ledger.core.packed import pack
from ledger.core.pipeline import Statement
from outbox.models import OutboxEvent

SEQUENCE_DIGITS = 20
NOTIFY_CHANNEL = "ledger_outbox"  # the relay LISTENs here


def sequence_text(version: int) -> str:
    """CloudEvents sequence: a lexicographically ordered string, the version zero-padded."""
    return f"{version:0{SEQUENCE_DIGITS}d}"


@dataclass(slots=True)
class PendingEvent:
    type: str
    subject: uuid.UUID
    data: Any
    sequence: int | None = None
    # The request that caused this event, when one transaction serves several (group commit).
    ctx: WriteContext | None = None


def envelope(event: PendingEvent, event_id: uuid.UUID, ctx: WriteContext) -> dict[str, Any]:
    """The CloudEvents envelope as stored. Values may be UUIDs, datetimes and msgspec structs:
    they are written as JSON by msgspec (RFC 3339 times, exact integers), never converted
    twice (a 1,000-transfer batch builds 3,000 of these inside its lock window)."""
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(event_id),
        "source": "ledger",
        "type": event.type,
        "subject": str(event.subject),
        "time": ctx.now,
        "datacontenttype": "application/json",
    }
    if event.sequence is not None:
        body["sequence"] = sequence_text(event.sequence)
    if ctx.traceparent:
        body["traceparent"] = ctx.traceparent
    body["data"] = event.data
    return body


NOTIFY = Statement("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
# A session whose `info` holds a notifier (the API's, outbox/notifier.py) wakes the relay after
# commit, outside the transaction; any other notifies inside it, delivered at commit.
NOTIFIER_SESSION_KEY = "ledger.outbox_notifier"


async def write_events(
    session: AsyncSession, events: list[PendingEvent], ctx: WriteContext
) -> None:
    writer = BulkWriter(session)
    await add_events(writer, events, ctx)
    await writer.flush()


async def add_events(writer: BulkWriter, events: list[PendingEvent], ctx: WriteContext) -> None:
    """Queue the outbox rows on `writer` (sent with the rest of its unit of work)."""
    if not events:
        return
    rows = []
    for event in events:
        event_id = new_id()
        event_ctx = event.ctx or ctx
        rows.append(
            {
                "event_id": event_id,
                "type": event.type,
                "subject": str(event.subject),
                "sequence": event.sequence,
                # Encoded here, once, as the `json` column received it before: the same bytes.
                "envelope_packed": pack(msgspec.json.encode(envelope(event, event_id, event_ctx))),
                "created_at": event_ctx.now,
            }
        )
    # The Core table, not the ORM entity: ORM bulk inserts leave out None values and split
    # rows with different None columns (transfer events have no sequence) into one statement
    # each, which made a 1,000-transfer batch spend a second here. Many rows go by COPY.
    await writer.insert(cast(sa.Table, OutboxEvent.__table__), rows)
    # Wakes the relay before its next poll.
    notifier = writer.session.info.get(NOTIFIER_SESSION_KEY)
    if notifier is not None:
        after_commit(writer.session, notifier.poke)
    else:
        writer.add(NOTIFY)
