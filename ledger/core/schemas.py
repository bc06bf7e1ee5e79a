"""Shared request/response building blocks (msgspec) and the strict JSON decoder."""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import msgspec

from ledger.core import limits
from ledger.core.errors import ValidationFailed

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
Metadata = dict[str, Any]


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


def check_metadata(metadata: Metadata | None, field: str = "metadata") -> Metadata:
    """Metadata is free-form but bounded: size, depth, no NUL. It is never money, so any JSON
    value (floats included) is kept as the client sent it."""
    if metadata is None:
        return {}
    encoded = msgspec.json.encode(metadata)
    if len(encoded) > limits.METADATA_BYTES_MAX:
        raise ValidationFailed(
            f"{field} is larger than {limits.METADATA_BYTES_MAX} bytes",
            errors=[{"field": field, "message": "too large"}],
        )
    if _depth(metadata) > limits.METADATA_DEPTH_MAX:
        raise ValidationFailed(
            f"{field} nests deeper than {limits.METADATA_DEPTH_MAX}",
            errors=[{"field": field, "message": "too deep"}],
        )
    if b"\\u0000" in encoded:
        raise ValidationFailed(
            f"{field} may not contain NUL characters",
            errors=[{"field": field, "message": "NUL character"}],
        )
    return metadata


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
