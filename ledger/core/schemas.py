"""Shared request/response building blocks (msgspec) and the strict JSON decoder."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, TypeVar

import msgspec

from ledger.core import limits
from ledger.core.errors import ValidationFailed
from ledger.core.json_text import duplicate_name, text_form

T = TypeVar("T")

Amount = Annotated[int, msgspec.Meta(ge=1, le=limits.AMOUNT_MAX)]
SignedBalance = Annotated[int, msgspec.Meta(ge=-limits.AMOUNT_MAX, le=limits.AMOUNT_MAX)]
# The same patterns as the accounts table's CHECK constraints (ck_accounts_currency_format,
# ck_accounts_code_format), so that what a request may carry and what the table keeps agree.
# `(?!\n)` before `$`: Python's `$` (msgspec's patterns) also matches before a trailing newline,
# which PostgreSQL's `~` refuses; ECMA regexes (OpenAPI readers) read the lookahead the same way.
CURRENCY_PATTERN = r"^[A-Z0-9]{3,12}(?!\n)$"
ACCOUNT_CODE_PATTERN = r"^[A-Za-z0-9:._-]{1,128}(?!\n)$"
Currency = Annotated[str, msgspec.Meta(pattern=CURRENCY_PATTERN)]
AccountCode = Annotated[str, msgspec.Meta(pattern=ACCOUNT_CODE_PATTERN)]
# Metadata is kept and answered as the client's JSON text (`check_metadata`), never decoded into
# Python values: a float reprints numbers (`1e23` -> `1e+23`), jsonb reprints them too (`1e308`
# -> 309 digits). msgspec cannot put Raw in a union (`Raw | None`), so a body without metadata
# gets the empty Raw of `metadata_field()`. Both say "an object" in their schemas: `Metadata` to
# the OpenAPI document (Litestar reads `extra`), `MetadataData` to msgspec's JSON Schema (the
# event payloads' AsyncAPI document).
METADATA_DESCRIPTION = (
    f"any JSON object, at most {limits.METADATA_BYTES_MAX} bytes and "
    f"{limits.METADATA_DEPTH_MAX} levels deep; kept and answered as sent"
)
_METADATA_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "description": METADATA_DESCRIPTION,
}
Metadata = Annotated[
    msgspec.Raw,
    msgspec.Meta(
        extra_json_schema={
            "description": METADATA_DESCRIPTION,
            "extra": {"type": "object", "additional_properties": True},
        }
    ),
]
MetadataData = Annotated[msgspec.Raw, msgspec.Meta(extra_json_schema=_METADATA_JSON_SCHEMA)]
EMPTY_METADATA = msgspec.Raw(b"{}")
# PostgreSQL numeric's largest display scale (NUMERIC_DSCALE_MAX): a property of the database,
# not a bound we chose; a number with more digits after the point cannot be cast to jsonb.
PG_NUMERIC_SCALE_DIGITS_MAX = 16_383


def absent_metadata() -> msgspec.Raw:
    """The default of a body's metadata field: no metadata sent (an empty text, not JSON)."""
    return msgspec.Raw(b"")


def metadata_field() -> Any:
    """A body's optional metadata field: absent is `absent_metadata()`, `null` is `null`."""
    return msgspec.field(default_factory=absent_metadata)


class Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Base of request bodies: unknown fields are refused."""


_PATH = re.compile(r"at `\$(?P<path>[^`]*)`")
_UNKNOWN = re.compile(r"unknown field `(?P<name>[^`]*)`")


def _field_of(message: str) -> str:
    match = _PATH.search(message)
    if not match:
        unknown = _UNKNOWN.search(message)
        return unknown.group("name") if unknown else ""
    path = match.group("path")
    return path.lstrip(".").replace("][", ".").replace("[", ".").replace("]", "").strip(".")


def decode_body(body: bytes, kind: type[T]) -> T:
    """Decode a JSON body strictly: wrong types, floats or strings for integers, unknown fields
    and out-of-range values are all `validation_error` with the offending field named."""
    if not body.strip():
        raise ValidationFailed(
            "a JSON body is required", errors=[{"field": "", "message": "empty"}]
        )
    # First: which value a field holds, and so any other error, depends on the reader when a
    # name is written twice.
    refuse_duplicate_names(body)
    try:
        value = msgspec.json.decode(body, type=kind, strict=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise ValidationFailed(
            message, errors=[{"field": _field_of(message), "message": message}]
        ) from exc
    except msgspec.DecodeError as exc:
        raise ValidationFailed(
            "the body is not valid JSON", errors=[{"field": "", "message": str(exc)}]
        ) from exc
    except RecursionError as exc:  # msgspec gives up on values nested hundreds deep
        raise ValidationFailed(
            "the body nests too deeply", errors=[{"field": "", "message": "too deep"}]
        ) from exc
    return value


def refuse_duplicate_names(body: bytes) -> None:
    """One meaning per text (RFC 7493): a member name written twice in one object, anywhere in
    the body (its metadata, a batch item), is a `validation_error` naming that field."""
    path = duplicate_name(body)
    if path is not None:
        raise ValidationFailed(
            f"{path or 'a member name'} is written twice in one object",
            errors=[{"field": path, "message": "duplicate member name"}],
        )


def check_metadata(metadata: msgspec.Raw, field: str = "metadata") -> msgspec.Raw:
    """Metadata is free-form but bounded: an object, at most METADATA_BYTES_MAX bytes and
    METADATA_DEPTH_MAX deep, no NUL, every number one that a JSON reader (a double) and the
    database's jsonb copy can hold.

    What it returns is what is kept and answered: the client's text without insignificant
    whitespace, every token (number, string, escape) and member order as sent. Metadata is never
    money, so nothing here reads a number's value beyond checking that it can be kept.
    Absent or `null` is the empty object."""
    if not metadata or bytes(metadata) == b"null":
        return EMPTY_METADATA
    try:
        value = _METADATA_DECODER.decode(metadata)
    except msgspec.ValidationError as exc:  # the float hook refused a number
        reason = str(exc).split(" - at ")[0]
        detail = f"{field} holds a number that cannot be kept: {reason}"
        raise _invalid(field, detail, "number out of range") from exc
    except RecursionError as exc:  # a hostile value nests thousands deep
        detail = f"{field} nests deeper than {limits.METADATA_DEPTH_MAX}"
        raise _invalid(field, detail, "too deep") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # The body's decoder skips over a Raw value: its strings are not yet checked as UTF-8.
        raise _invalid(field, f"{field} is not valid JSON: {exc}", "not JSON") from exc
    if not isinstance(value, dict):
        raise _invalid(field, f"{field} must be an object", "not an object")
    kept = msgspec.json.format(metadata, indent=-1)
    if len(kept) > limits.METADATA_BYTES_MAX:
        detail = f"{field} is larger than {limits.METADATA_BYTES_MAX} bytes"
        raise _invalid(field, detail, "too large")
    if _depth(value) > limits.METADATA_DEPTH_MAX:
        detail = f"{field} nests deeper than {limits.METADATA_DEPTH_MAX}"
        raise _invalid(field, detail, "too deep")
    if _holds_nul(value):
        raise _invalid(field, f"{field} may not contain NUL characters", "NUL character")
    return msgspec.Raw(kept)


def _invalid(field: str, detail: str, message: str) -> ValidationFailed:
    return ValidationFailed(detail, errors=[{"field": field, "message": message}])


def _keepable_number(token: str) -> str:
    """Check one non-integer number token and hand it back unchanged (its text is all we keep);
    a ValueError here is msgspec's ValidationError for the caller.

    Refused: a magnitude beyond a double (every JSON consumer reading it as one would fail, our
    own consumer kit included) and more digits after the point than PostgreSQL's numeric holds
    (the jsonb copy, kept for queries, could not be written). Integers never reach this hook:
    16 KiB of digits is far inside numeric's range."""
    if math.isinf(float(token)):
        raise ValueError(f"{token[:24]} is beyond the range of a double")
    mantissa, _, exponent = token.lower().partition("e")  # JSON: -1.5e+3, 2.50, 1E5
    if len(mantissa.partition(".")[2]) - int(exponent or 0) > PG_NUMERIC_SCALE_DIGITS_MAX:
        raise ValueError(
            f"{token[:24]} has more than {PG_NUMERIC_SCALE_DIGITS_MAX} digits after the point"
        )
    return token


# Floats stay their token text (never a Python float: validation must not need one).
_METADATA_DECODER = msgspec.json.Decoder(float_hook=_keepable_number)


def _holds_nul(value: Any) -> bool:
    """True when a key or a string anywhere holds U+0000 (PostgreSQL text cannot)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any("\x00" in key for key in item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "\x00" in item:
            return True
    return False


def same_metadata(kept: msgspec.Raw, asked: msgspec.Raw) -> bool:
    """Whether a retry asks for the metadata already kept (both as `check_metadata` returns).

    The same form (`text_form`) is the same: the same members in another order, or strings
    written with other escapes (`\\u00e9` for `é`), are the same; a number is the same only
    with the same text (`1` is not `1.0`, `1.0` is not `1.00`): the retry would otherwise be
    answered with a number text it did not send. The Idempotency-Key fingerprint compares
    bodies by the same form, so a same-id retry and a same-key retry agree."""
    if bytes(kept) == bytes(asked):
        return True
    return text_form(bytes(kept)) == text_form(bytes(asked))


def _depth(value: Any, limit: int = limits.METADATA_DEPTH_MAX) -> int:
    """Nesting depth of a JSON value, counted without recursion and given up just past `limit`
    (a hostile body nests thousands deep: recursion would overflow the stack, a 500)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth) for child in children)
    return deepest


def check_text(value: str | None, field: str) -> None:
    if value is not None and "\x00" in value:
        raise ValidationFailed(
            f"{field} may not contain NUL characters",
            errors=[{"field": field, "message": "NUL character"}],
        )


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)
