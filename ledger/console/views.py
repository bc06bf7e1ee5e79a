"""View models the templates render: timeline items with their diffs, query parsing, cursors."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ledger.audit.chain import format_timestamp
from ledger.audit.schemas import AuditRecordOut
from ledger.console.diff import Change, decode, record_change, show
from ledger.core.errors import ValidationFailed

SEARCH_FIELDS = ("object_id", "actor", "request_id", "action", "from", "to")


@dataclass(frozen=True, slots=True)
class TimelineItem:
    seq: int
    id: str
    at: str
    action: str
    object_type: str
    object_id: str
    actor_name: str
    actor_id: str | None
    request_id: str | None
    trace_id: str | None
    client_addr: str | None
    change: Change
    asked: str | None


def _asked(data: dict[str, Any]) -> str | None:
    request = data.get("request")
    if not isinstance(request, dict):
        return None
    asked = {k: v for k, v in request.items() if v not in (None, {}, [])}
    return show(asked) if asked else None


def timeline_item(
    *,
    seq: int,
    record_id: Any,
    at: dt.datetime,
    action: str,
    object_type: str,
    object_id: str,
    actor_name: str,
    actor_id: Any,
    request_id: str | None,
    trace_id: str | None,
    client_addr: str | None,
    data: dict[str, Any],
    previous: dict[str, Any] | None,
    subject_id: str | None = None,
) -> TimelineItem:
    """`subject_id`: whose history this is (a reversal's own page shows the record that made
    it, kept under the original transfer); defaults to the record's object."""
    subject = subject_id or object_id
    if subject != object_id and str((data.get("result") or {}).get("id")) == subject:
        change = Change(f"created by reversing transfer {object_id}", [])
    else:
        change = record_change(object_id, data, previous)
    return TimelineItem(
        seq=seq,
        id=str(record_id),
        at=format_timestamp(at),
        action=action,
        object_type=object_type,
        object_id=object_id,
        actor_name=actor_name,
        actor_id=None if actor_id is None else str(actor_id),
        request_id=request_id,
        trace_id=trace_id,
        client_addr=client_addr,
        change=change,
        asked=_asked(data),
    )


def item_from_row(row: Any) -> TimelineItem:
    """A console repository row (`data_as_stored`, `previous_data`) as a timeline item."""
    return timeline_item(
        seq=row.seq,
        record_id=row.id,
        at=row.at,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        actor_name=row.actor_name,
        actor_id=row.actor_id,
        request_id=row.request_id,
        trace_id=row.trace_id,
        client_addr=row.client_addr,
        data=decode(row.data_as_stored) or {},
        previous=decode(row.previous_data),
    )


def item_from_record(
    record: AuditRecordOut, previous: dict[str, Any] | None, subject_id: str | None = None
) -> TimelineItem:
    return timeline_item(
        seq=record.seq,
        record_id=record.id,
        at=record.at,
        action=record.action,
        object_type=record.object_type,
        object_id=record.object_id,
        actor_name=record.actor.name,
        actor_id=record.actor.id,
        request_id=record.request_id,
        trace_id=record.trace_id,
        client_addr=record.client_addr,
        data=record.data,
        previous=previous,
        subject_id=subject_id,
    )


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


def parse_time(value: str | None, field: str) -> dt.datetime | None:
    """RFC 3339, or the form's `datetime-local` value (no offset), read as UTC."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _invalid(field, "must be a timestamp like 2026-01-31T12:00:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        raise _invalid(field, "is out of range") from None


def parse_cursor(value: str | None, field: str) -> int | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise _invalid(field, "must be a whole number from a page link")
    return int(text)


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


def blank_to_none(value: str | None) -> str | None:
    return None if value is None or not value.strip() else value.strip()


def query_string(values: dict[str, str | None], **extra: Any) -> str:
    """The search's query string, blanks left out, plus `extra` (say the next page's cursor)."""
    items = {k: v for k, v in values.items() if v}
    items.update({k: str(v) for k, v in extra.items() if v is not None})
    return urlencode(items)
