"""Query and header parameters of the API: parsed and checked in one place.

Litestar parses a parameter into its declared type (an int, a UUID, a datetime) and answers 422
when it cannot; what it cannot express is checked here, with our error codes: list bounds,
filters shaped like the fields they filter, timestamps that carry their UTC offset, and the
If-Match precondition of a versioned write.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Parameter

from ledger.core.errors import PreconditionFailed, PreconditionRequired, ValidationFailed
from ledger.http.pagination import check_limit

ETAG_DIGITS_MAX = 19  # a version is a bigint
# ASCII digits only: `str.isdigit` is also true for `²` (which `int()` then refuses: a 500) and
# for Arabic-Indic or fullwidth digits (which `int()` reads: a lookalike ETag that matched).
_ETAG_VERSION = re.compile(f"[0-9]{{1,{ETAG_DIGITS_MAX}}}")


def list_limit(limit: int) -> int:
    """A list's `limit`: 1..LIST_LIMIT_MAX (the rule lives with the cursors it pages)."""
    return check_limit(limit)


def one_of(field: str, value: str | None, choices: tuple[str, ...]) -> str | None:
    """An enum filter (a transfer's `state`): one of `choices`, or absent."""
    if value is not None and value not in choices:
        raise ValidationFailed(
            f"{field} must be one of {', '.join(choices)}",
            errors=[{"field": field, "message": f"unknown {field}"}],
        )
    return value


# A filter's rule: the pattern a value must match in full, or the values it may take.
FilterRule = re.Pattern[str] | tuple[str, ...]


def check_filters(values: Mapping[str, str | None], rules: Mapping[str, FilterRule]) -> None:
    """Filters take the shapes the fields have: anything else (a NUL, a 10 kB string) is a
    validation error naming every wrong filter, not a query."""
    wrong = []
    for name, value in values.items():
        rule = rules[name]
        if value is None:
            continue
        ok = rule.fullmatch(value) is not None if isinstance(rule, re.Pattern) else value in rule
        if not ok:
            wrong.append(name)
    if wrong:
        raise ValidationFailed(
            f"invalid filter: {', '.join(wrong)}",
            errors=[{"field": name, "message": "invalid value"} for name in wrong],
        )


def timestamp(query: str | None = None) -> Any:
    """A timestamp query parameter (`from`, `to`, `as_of`): declared as an RFC 3339 string, so
    that the document says `format: date-time` and Litestar reads no number as a Unix time
    (`as_of=1e-102` was 1970); `utc` parses it."""
    return Parameter(
        query=query,
        default=None,
        schema_extra={"format": "date-time"},
        description="an RFC 3339 timestamp with its UTC offset",
    )


def utc(value: str, field: str | None = None) -> dt.datetime:
    """An RFC 3339 timestamp parameter (`from`, `to`, `as_of`) in UTC. It must carry its
    offset: a naive time would silently mean the server's zone.

    The error names `field` when given (`from: timestamps must carry ...`, as the audit API
    answers); without it, a `timestamp`, as the accounts and transfers routes answer."""
    try:
        parsed = msgspec.json.decode(msgspec.json.encode(value), type=dt.datetime)
    except msgspec.ValidationError as exc:
        raise _bad_timestamp(field, "timestamp is not RFC 3339", "not RFC 3339") from exc
    if parsed.tzinfo is None:
        raise _bad_timestamp(field, "timestamps must carry a UTC offset (RFC 3339)", "no offset")
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError as exc:  # year 1 with a positive offset, year 9999 with a negative one
        raise _bad_timestamp(field, "timestamp is out of range", "out of range") from exc


def optional_utc(value: str | None, field: str | None = None) -> dt.datetime | None:
    return None if value is None else utc(value, field)


def _bad_timestamp(field: str | None, problem: str, short: str) -> ValidationFailed:
    if field is None:
        return ValidationFailed(problem, errors=[{"field": "timestamp", "message": short}])
    return ValidationFailed(f"{field}: {problem}", errors=[{"field": field, "message": problem}])


# -- versioned writes: ETag and If-Match --------------------------------------------------------


def etag(version: int) -> str:
    return f'"{version}"'


def if_match_version(value: str | None) -> int:
    """The version an If-Match header names (`"7"` or `W/"7"`): required, and a version."""
    if value is None or not value.strip():
        raise PreconditionRequired('send If-Match: "<version>" from the account\'s ETag')
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if _ETAG_VERSION.fullmatch(text) is None:
        raise PreconditionFailed("If-Match must be the account's ETag, a quoted version")
    return int(text)


async def require_if_match(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard: a versioned write without an If-Match (or a blank one) is refused (428) before its
    body is even decoded. A present one is read by the handler, after the body: a malformed body
    is a 422 whatever the If-Match, and an If-Match that is no current ETag a 412."""
    value = connection.headers.get("if-match")
    if value is None or not value.strip():
        if_match_version(value)


def positive_decimal_pattern(maximum: int) -> str:
    """A regular expression for the decimal spellings of 1..`maximum` (no sign, no leading zero),
    for a number that travels as a string (an optional query parameter): the document then
    states the exact bound the handler checks. A number of fewer digits than `maximum` is any;
    one of as many digits is below it at its first smaller digit, or is `maximum` itself."""
    if maximum < 1:
        raise ValueError("the maximum must be positive")
    digits = str(maximum)
    width = len(digits)
    choices = []
    if width > 1:
        choices.append(f"[1-9][0-9]{{0,{width - 2}}}")
    for i, digit in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(digit) > low:
            rest = width - i - 1
            tail = f"[0-9]{{{rest}}}" if rest else ""
            choices.append(f"{digits[:i]}[{low}-{int(digit) - 1}]{tail}")
    choices.append(digits)
    return "^(?:" + "|".join(choices) + r")(?!\n)$"
