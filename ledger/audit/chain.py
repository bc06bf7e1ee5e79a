"""The hash chain's arithmetic, pure: a canonical text for each record and the seal hash over it.

A seal's hash is SHA-256 over one canonical JSON object (keys sorted at every level, no spaces):

    {"prev_hash": <previous seal's hash, or 64 zeros>, "record": {<every column>},
     "sealed_at": <timestamp>, "seq": <seal seq>}

The record's timestamps are written as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds, which is
PostgreSQL's precision), UUIDs as lowercase hyphenated text, and `data` as stored (JSONB, read
back and re-encoded with sorted keys). The seal's own `seq` and `sealed_at` are inside the hash,
so a seal row cannot be renumbered or re-dated without breaking its hash either.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

GENESIS_HASH = "0" * 64

# Every column of audit_records, in the order docs/audit.md lists them.
RECORD_COLUMNS = (
    "id",
    "seq",
    "xact_id",
    "at",
    "actor_id",
    "actor_name",
    "action",
    "object_type",
    "object_id",
    "request_id",
    "trace_id",
    "client_addr",
    "data",
)


def format_timestamp(value: dt.datetime) -> str:
    """One fixed text per instant, whatever timezone the driver handed us."""
    if value.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    # isoformat in UTC always ends in "+00:00"; twice as fast as strftime, the same text.
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    return value


def canonical_record(row: Any) -> dict[str, Any]:
    """The record as plain JSON values; `row` is anything with the audit_records columns as
    attributes (a SQLAlchemy Row)."""
    return {name: _plain(getattr(row, name)) for name in RECORD_COLUMNS}


@dataclass(frozen=True, slots=True)
class SealLink:
    seq: int
    record_id: uuid.UUID
    prev_hash: str
    hash: str
    sealed_at: dt.datetime


def seal_hash(seq: int, prev_hash: str, sealed_at: dt.datetime, record: dict[str, Any]) -> str:
    body = {
        "prev_hash": prev_hash,
        "record": record,
        "sealed_at": format_timestamp(sealed_at),
        "seq": seq,
    }
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


def link(seq: int, prev_hash: str, sealed_at: dt.datetime, row: Any) -> SealLink:
    """The next link of the chain for one record row."""
    digest = seal_hash(seq, prev_hash, sealed_at, canonical_record(row))
    return SealLink(
        seq=seq, record_id=row.id, prev_hash=prev_hash, hash=digest, sealed_at=sealed_at
    )
