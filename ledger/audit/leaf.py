"""A sealed record's Merkle leaf: the RFC 8785 (JCS) bytes of its `GET /v1/audit` item.

The item is built here, once, for both the API (which answers it) and the sealer (which hashes
it), so the two can never drift apart. `data` is the record's data as stored (the writer's text),
so the leaf covers exactly what a reviewer is shown, number texts included.

JCS is defined on I-JSON values, and an audit item is not always one: amounts and balances go up
to 2**63-1 (beyond a double's exact integers), and metadata keeps any integer a client sent. The
rule here is total, and equal to RFC 8785 wherever RFC 8785 is defined:

- an integer (a number token without fraction or exponent) is written as its decimal digits,
  whatever its size (`-0` as `0`); inside +-(2**53-1) that is exactly what JCS writes;
- any other number is written as JCS writes the double it denotes; one beyond a double's range
  (which the service refuses in metadata, so only a hand-made item can hold it) is written as
  its token text;
- a string holding a lone surrogate (which PostgreSQL cannot store, so again only a hand-made
  item) gets that code unit escaped as `\\uXXXX`, lower-case hex;
- objects, arrays, other strings, `true`, `false`, `null`: RFC 8785, by the `rfc8785` library.

A number never becomes a string, so two items that differ only in a value's type never share a
leaf.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from typing import Any

import msgspec
import rfc8785
import sqlalchemy as sa

from ledger.audit.schemas import AuditActor, AuditRecordOut

LEAF_PREFIX = b"\x00"


class _Integer(str):
    """An integer token's text: written as is (JSON allows no leading zeros)."""

    __slots__ = ()


class _OutOfRange(str):
    """A non-integer token beyond a double's range: written as its text."""

    __slots__ = ()


def _parse_int(token: str) -> _Integer:
    return _Integer("0" if token == "-0" else token)  # noqa: S105 (a number, not a secret)


def _parse_float(token: str) -> float | _OutOfRange:
    value = float(token)
    return value if math.isfinite(value) else _OutOfRange(token)


def record_out(row: sa.Row[Any]) -> AuditRecordOut:
    """The record's answer from a row with the audit_records columns (`data` parsed)."""
    return AuditRecordOut(
        id=row.id,
        seq=row.seq,
        at=row.at,
        actor=AuditActor(id=row.actor_id, name=row.actor_name),
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        request_id=row.request_id,
        trace_id=row.trace_id,
        client_addr=row.client_addr,
        data=row.data,
    )


def row_leaf_hash(row: sa.Row[Any]) -> bytes:
    """The leaf hash of a row with the audit_records columns and `data_as_stored`."""
    return record_leaf_hash(record_out(row), row.data_as_stored.encode())


def item(record: AuditRecordOut, data: bytes) -> dict[str, Any]:
    """The `GET /v1/audit` item of a record: its fields, `at` in UTC, `data` as stored."""
    fields = msgspec.structs.asdict(record)
    fields["at"] = record.at.astimezone(dt.UTC)
    fields["data"] = msgspec.Raw(data)
    return fields


def item_json(record: AuditRecordOut, data: bytes) -> bytes:
    return msgspec.json.encode(item(record, data))


# Text where code-point order and UTF-16 order of member names could differ, or a string could
# hold a lone surrogate: any character beyond the BMP, raw (a 4-byte UTF-8 lead) or escaped.
_NOT_PLAIN = re.compile(rb"[\xf0-\xf4]|\\u[dD][89abAB]")


def canonical(text: bytes | str) -> bytes:
    """The canonical bytes of one JSON text, by the rule in this module's docstring. Raises
    ValueError only for text that is not JSON."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    # ASCII with no escape at all is plain without asking the pattern (both checks run at C
    # speed, about ten times faster than the pattern over a whole item).
    plain = raw.isascii() and b"\\u" not in raw
    if plain or _NOT_PLAIN.search(raw) is None:
        fast = _canonical_plain(raw)
        if fast is not None:
            return fast
    return canonical_by_walk(raw)


def _canonical_plain(raw: bytes) -> bytes | None:
    """The common case, at C speed: no number but integers, every character in the BMP. Then
    RFC 8785 and the rule above are what msgspec writes with sorted keys: integers as their
    digits, strings with exactly JCS's escapes (tests/test_audit_leaf.py compares every BMP
    character with the `rfc8785` library), member names in code-point order, which is UTF-16
    order inside the BMP. None: take the walk (a float, or an integer too long to read)."""
    floats: list[str] = []

    def no_float(token: str) -> float:
        floats.append(token)
        return 0.0

    try:
        value = msgspec.json.Decoder(float_hook=no_float).decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None  # an integer of thousands of digits; invalid JSON fails in the walk
    if floats:
        return None
    return msgspec.json.encode(value, order="sorted")


def canonical_by_walk(text: bytes | str) -> bytes:
    """The rule, value by value (floats and non-BMP text; the reference for the fast path)."""
    value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    out: list[bytes] = []
    _write(value, out)
    return b"".join(out)


def _write(value: Any, out: list[bytes]) -> None:
    if isinstance(value, dict):
        out.append(b"{")
        members = sorted(value.items(), key=lambda kv: _utf16_key(kv[0]))
        for position, (key, member) in enumerate(members):
            if position:
                out.append(b",")
            out.append(_string(key))
            out.append(b":")
            _write(member, out)
        out.append(b"}")
    elif isinstance(value, list):
        out.append(b"[")
        for position, member in enumerate(value):
            if position:
                out.append(b",")
            _write(member, out)
        out.append(b"]")
    elif isinstance(value, _Integer | _OutOfRange):
        out.append(value.encode("ascii"))
    elif isinstance(value, str):
        out.append(_string(value))
    else:  # float, bool, None
        out.append(rfc8785.dumps(value))


def _utf16_key(key: str) -> bytes:
    """RFC 8785 3.2.3: member names sorted by their UTF-16 code units."""
    return key.encode("utf-16be", "surrogatepass")


def _string(value: str) -> bytes:
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:  # a lone surrogate: escape that code unit alone
        parts = [b'"']
        for char in value:
            if 0xD800 <= ord(char) <= 0xDFFF:
                parts.append(f"\\u{ord(char):04x}".encode("ascii"))
            else:
                parts.append(rfc8785.dumps(char)[1:-1])
        parts.append(b'"')
        return b"".join(parts)


def leaf_hash(canonical_item: bytes) -> bytes:
    """RFC 9162 2.1.1: SHA-256(0x00 || leaf)."""
    return hashlib.sha256(LEAF_PREFIX + canonical_item).digest()


def record_leaf_hash(record: AuditRecordOut, data: bytes) -> bytes:
    return leaf_hash(canonical(item_json(record, data)))
