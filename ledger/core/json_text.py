"""One meaning per JSON text (I-JSON, RFC 7493): duplicated member names, and the text's form.

Two texts mean the same request only when every reader reads them alike. A duplicated member
name breaks that (`{"amount": 5, "amount": 7}` is 7 to msgspec and to PostgreSQL, 5 to some
readers, an error to others), and so does a number spelled otherwise (`1.0` and `1.00` are one
double, two decimals). So:

- `duplicate_name(text)` finds a member name written twice in one object, anywhere in the
  text, and says where (`transfers.3.amount`, `metadata.a.b`). Every JSON body the API takes
  and the record file of `ledger audit verify-proof` go through it.
- `text_form(text)` is the text with what carries no meaning taken out: whitespace, member
  order, and a string's choice of escapes (`"\\u00e9"` and `"é"` are one string to every
  reader). Every number keeps its exact token, so `1.0`, `1.00`, `1e0` and `-0`/`0` differ.
  An Idempotency-Key replays a body only with the same form, and a same-id retry is a replay
  only with metadata of the same form.

The duplicate check is on every request's path, so it is made of C-speed steps: msgspec reads
the text into Python values (a duplicated member is then lost: the later value wins) and writes
it back; the text then had a duplicated member exactly when it had more `:` than the rewrite.
A `:` is either a member's own or inside a string, and msgspec writes every `:` of a string as
it is; written as `\\u003a` it would not be counted in the text, which is why such a text takes
the exact walk. The walk (the standard library's parser, keeping every member) also names the
field, and runs only then or when a duplicate is found.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import msgspec

_DECODER = msgspec.json.Decoder()
# Floats as their token text: `text_form` writes them back as they were sent.
_TOKEN_DECODER = msgspec.json.Decoder(float_hook=msgspec.Raw)
_ENCODER = msgspec.json.Encoder(order="sorted")
_ESCAPED_COLON = b"\\u003"  # `\u003a`/`\u003A`, or a `\u003x` that is no colon (rare either way)
# An integer token `-0` (msgspec reads it as 0, and writes `0`): a `-0` not followed by a
# fraction, an exponent or a digit. Inside a string it only sends the text the slower way.
_MINUS_ZERO = re.compile(rb"-0(?![.eE0-9])")


class _Members(list[tuple[str, Any]]):
    """An object's members, in order, duplicates kept."""

    __slots__ = ()


def duplicate_name(text: bytes) -> str | None:
    """The path of the first member name written twice in one object (its second occurrence, in
    text order), or None. None too for a text that is not JSON: its reader refuses it."""
    if _ESCAPED_COLON not in text:
        try:
            rewritten = _ENCODER.encode(_DECODER.decode(text))
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            pass  # not JSON for msgspec (a lone surrogate, too deep): the walk decides
        else:
            if text.count(b":") == rewritten.count(b":"):
                return None
    return _first_duplicate(text)


def _first_duplicate(text: bytes) -> str | None:
    try:
        value = json.loads(text, object_pairs_hook=_Members, parse_int=len, parse_float=len)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's stack
        return None
    # Depth first, in text order: each member's value is searched before the next member's
    # name is read, so the duplicate named is the one that comes first in the text.
    stack: list[tuple[Iterator[tuple[str, Any]], tuple[str, ...], set[str] | None]] = []
    _enter(value, (), stack)
    while stack:
        members, path, seen = stack[-1]
        step = next(members, None)
        if step is None:
            stack.pop()
            continue
        name, member = step
        if seen is not None:
            if name in seen:
                return ".".join((*path, name))
            seen.add(name)
        _enter(member, (*path, name), stack)
    return None


def _enter(
    value: Any,
    path: tuple[str, ...],
    stack: list[tuple[Iterator[tuple[str, Any]], tuple[str, ...], set[str] | None]],
) -> None:
    if isinstance(value, _Members):
        stack.append((iter(value), path, set()))
    elif isinstance(value, list):
        stack.append((((str(i), m) for i, m in enumerate(value)), path, None))


def text_form(text: bytes) -> bytes:
    """The text without whitespace, members sorted by name, strings written one way, every
    number as its token. A text that is not JSON is its own form."""
    if _MINUS_ZERO.search(text) is None:
        try:
            return _ENCODER.encode(_TOKEN_DECODER.decode(text))
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            return text
    try:
        value = json.loads(text, parse_int=msgspec.Raw, parse_float=msgspec.Raw)
        return _ENCODER.encode(value)
    except (ValueError, RecursionError, msgspec.EncodeError):
        return text
