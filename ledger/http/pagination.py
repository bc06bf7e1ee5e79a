"""Lists: the limit bound, opaque cursors and the page envelope."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from ledger.core import limits
from ledger.core.errors import (
    ValidationFailed,
)

T = TypeVar("T")
log = structlog.get_logger("ledger.http")
# A sequence cursor: ASCII digits, as many as a bigint has. Not `str.isdigit`, which is also true
# for `²` (that `int()` refuses: a 500) and for Arabic-Indic or fullwidth digits (that `int()`
# reads: a second spelling of one cursor).
_SEQUENCE = re.compile(f"[0-9]{{1,{len(str(limits.AMOUNT_MAX))}}}")


def check_limit(limit: int) -> int:
    if not (1 <= limit <= limits.LIST_LIMIT_MAX):
        raise ValidationFailed(
            f"limit must be 1..{limits.LIST_LIMIT_MAX}",
            errors=[{"field": "limit", "message": "out of range"}],
        )
    return limit


def encode_cursor(kind: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise _bad_cursor() from exc
    prefix, _, value = text.partition(":")
    if prefix != kind or not value:
        raise _bad_cursor()
    return value


def decode_uuid_cursor(kind: str, cursor: str | None) -> uuid.UUID | None:
    value = decode_cursor(kind, cursor)
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise _bad_cursor() from exc


def decode_int_cursor(kind: str, cursor: str | None) -> int | None:
    value = decode_cursor(kind, cursor)
    if value is None:
        return None
    if _SEQUENCE.fullmatch(value) is None or int(value) > limits.AMOUNT_MAX:
        raise _bad_cursor()
    return int(value)


def _bad_cursor() -> ValidationFailed:
    return ValidationFailed(
        "cursor is not valid", errors=[{"field": "cursor", "message": "invalid"}]
    )


def page(
    items: list[Any], limit: int, next_value: Callable[[Any], str], kind: str
) -> dict[str, Any]:
    cursor = encode_cursor(kind, next_value(items[-1])) if len(items) == limit and items else None
    return {"data": items, "next_cursor": cursor}
