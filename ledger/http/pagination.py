"""Lists: the limit bound, opaque cursors and the page envelope."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import structlog
from litestar.params import Parameter

from ledger.core import limits
from ledger.core.errors import (
    ValidationFailed,
)

T = TypeVar("T")
log = structlog.get_logger("ledger.http")
# A cursor is the key of the last item of the page before: a UUID for lists in id order, a
# sequence (ASCII digits) for lists in sequence order. Its text says exactly that, so that the
# OpenAPI document can state which cursors exist (`pattern`), and every cursor it admits is one
# the list takes. Not `str.isdigit`, which is also true for `²` (that `int()` refuses) and for
# Arabic-Indic or fullwidth digits (that `int()` reads: a second spelling of one cursor).
# 18 digits: every value fits a bigint; no sequence or feed position comes near it.
SEQUENCE_CURSOR_DIGITS_MAX = 18
# `(?!\n)` before `$`: msgspec checks patterns with Python's `re.search`, whose `$` also matches
# before a trailing newline (see ledger/core/schemas.py).
UUID_PATTERN = (
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?!\n)$"
)
SEQUENCE_CURSOR_PATTERN = f"^[0-9]{{1,{SEQUENCE_CURSOR_DIGITS_MAX}}}(?!\\n)$"
_UUID_CURSOR = re.compile(UUID_PATTERN)
_SEQUENCE_CURSOR = re.compile(SEQUENCE_CURSOR_PATTERN)
_CURSOR_DESCRIPTION = "the `next_cursor` of the page before; absent: the first page"

# The parameters of every list, declared once: Litestar checks them (422) and documents them.
Limit = Annotated[
    int,
    Parameter(ge=1, le=limits.LIST_LIMIT_MAX, description=f"page size, 1..{limits.LIST_LIMIT_MAX}"),
]
UuidCursor = Annotated[str | None, Parameter(pattern=UUID_PATTERN, description=_CURSOR_DESCRIPTION)]
# An optional id filter (`?account_id=`, `?parent_id=`): a string with the id's pattern, so that
# `?x=null` is refused (422) rather than read as "no filter".
UuidFilter = Annotated[str | None, Parameter(pattern=UUID_PATTERN, schema_extra={"format": "uuid"})]
SequenceCursor = Annotated[
    str | None, Parameter(pattern=SEQUENCE_CURSOR_PATTERN, description=_CURSOR_DESCRIPTION)
]


def check_limit(limit: int) -> int:
    if not (1 <= limit <= limits.LIST_LIMIT_MAX):
        raise ValidationFailed(
            f"limit must be 1..{limits.LIST_LIMIT_MAX}",
            errors=[{"field": "limit", "message": "out of range"}],
        )
    return limit


def encode_cursor(kind: str, value: str) -> str:
    """The cursor after `value`, a key of a list of `kind` (the kind names the key's shape in
    the callers; the text is the key itself)."""
    return value


def decode_uuid_cursor(kind: str, cursor: str | None) -> uuid.UUID | None:
    if cursor is None:
        return None
    if _UUID_CURSOR.search(cursor) is None:
        raise _bad_cursor(kind)
    return uuid.UUID(cursor)


def decode_int_cursor(kind: str, cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if _SEQUENCE_CURSOR.search(cursor) is None:
        raise _bad_cursor(kind)
    return int(cursor)


def _bad_cursor(kind: str) -> ValidationFailed:
    return ValidationFailed(
        f"cursor is not valid: not a {kind} cursor",
        errors=[{"field": "cursor", "message": "invalid"}],
    )


def page(
    items: list[Any], limit: int, next_value: Callable[[Any], str], kind: str
) -> dict[str, Any]:
    cursor = encode_cursor(kind, next_value(items[-1])) if len(items) == limit and items else None
    return {"data": items, "next_cursor": cursor}
