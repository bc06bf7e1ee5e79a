"""The hash chain's arithmetic, pure: a canonical text for each record and the seal hash over it.

A seal's hash is SHA-256 over one canonical JSON object (keys sorted at every level, no spaces):

    {"prev_hash": <previous seal's hash, or 64 zeros>, "record": {<every column>},
     "sealed_at": <timestamp>, "seq": <seal seq>}

The record's timestamps are written as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds, which is
PostgreSQL's precision), UUIDs as lowercase hyphenated text, and `data` as stored (JSONB, read
back and re-encoded with sorted keys). The seal's own `seq` and `sealed_at` are inside the hash,
so a seal row cannot be renumbered or re-dated without breaking its hash either.

Seals made since migration 0007 also carry what their sealer pass knew about transaction ids
(`PassFacts`), inside the hash as `horizon_xid` and `next_xid`: verification judges insertions
by them (ledger/audit/verify.py), so they must not be editable either. Older seals have neither
key, and hash as they always did.
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
class PassFacts:
    """What one sealer pass can prove about transactions, from the snapshot it began with.

    `horizon_xid`: every transaction with a smaller id had ended before an earlier pass that
    finished its scan, so each of their records was sealed by then. `next_xid`: no transaction
    had an id of this or more at `sealed_at` (the snapshot's xmax, read after the time)."""

    horizon_xid: int
    next_xid: int


@dataclass(frozen=True, slots=True)
class SealLink:
    seq: int
    record_id: uuid.UUID
    prev_hash: str
    hash: str
    sealed_at: dt.datetime
    facts: PassFacts


def seal_hash(
    seq: int,
    prev_hash: str,
    sealed_at: dt.datetime,
    record: dict[str, Any],
    facts: PassFacts | None,
) -> str:
    """`facts` None: a seal made before migration 0007, hashed without them."""
    body: dict[str, Any] = {
        "prev_hash": prev_hash,
        "record": record,
        "sealed_at": format_timestamp(sealed_at),
        "seq": seq,
    }
    if facts is not None:
        body["horizon_xid"] = facts.horizon_xid
        body["next_xid"] = facts.next_xid
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


def link(seq: int, prev_hash: str, sealed_at: dt.datetime, facts: PassFacts, row: Any) -> SealLink:
    """The next link of the chain for one record row."""
    digest = seal_hash(seq, prev_hash, sealed_at, canonical_record(row), facts)
    return SealLink(
        seq=seq,
        record_id=row.id,
        prev_hash=prev_hash,
        hash=digest,
        sealed_at=sealed_at,
        facts=facts,
    )
