"""API key request and response bodies (the responses are `KeyView.public()`, this shape)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

from ledger.core.roles import Role
from ledger.core.schemas import Strict


class ApiKeyCreate(Strict):
    # No control characters (DEL included); `(?!\n)`: Python's `$` also matches before a final
    # newline, which the character class alone would then let through.
    name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+(?!\n)$")
    ]
    role: Role


class ApiKeyOut(msgspec.Struct):
    """A key as listed and revoked: never its secret."""

    id: uuid.UUID
    name: str
    role: Role
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class ApiKeyCreated(ApiKeyOut):
    """A new key with its secret, shown once: a replay of the creation answers `secret: null`
    (the secret is stored nowhere in the clear)."""

    secret: str | None


class ApiKeyPage(msgspec.Struct):
    data: list[ApiKeyOut]
    next_cursor: str | None
