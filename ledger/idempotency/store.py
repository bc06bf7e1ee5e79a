"""Idempotency-Key: the key row is inserted first, in the same transaction as the effect.

`INSERT ... ON CONFLICT DO NOTHING` makes "check, act, mark" one atomic step: a concurrent
duplicate blocks on the uncommitted key until the first request commits (it then replays the
stored response) or rolls back (it then proceeds as the first). Refusals (4xx) are stored and
replayed too; the business effect is rolled back to a savepoint, the key row is kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core import limits
from ledger.core.db import sqlstate
from ledger.core.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    LedgerError,
    ValidationFailed,
)
from ledger.core.schemas import encode
from ledger.idempotency.models import IdempotencyRecord

keys_t = cast(sa.Table, IdempotencyRecord.__table__)
LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """A request's Idempotency-Key, scoped to its principal, with its body's fingerprint."""

    principal_id: uuid.UUID
    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes
    replayed: bool = False
    media_type: str = "application/json"
    # What the key row keeps when it must differ from what is sent now: an API key's secret is
    # shown once and stored only as a hash, so its replay carries no secret.
    stored_body: bytes | None = None


def check_key(key: str) -> str:
    if not (1 <= len(key) <= limits.IDEMPOTENCY_KEY_LENGTH_MAX) or not all(
        "!" <= ch <= "~" for ch in key
    ):
        raise ValidationFailed(
            "Idempotency-Key must be 1..255 visible ASCII characters",
            errors=[{"field": "Idempotency-Key", "message": "invalid"}],
        )
    return key


def fingerprint(method: str, path: str, body: bytes) -> str:
    """One request, one fingerprint: `/v1/transfers/` and `/v1/transfers` are the same route."""
    digest = hashlib.sha256()
    for part in (method.encode(), b"\0", (path.rstrip("/") or "/").encode(), b"\0", body):
        digest.update(part)
    return digest.hexdigest()


async def run_idempotent(
    session: AsyncSession,
    *,
    principal_id: uuid.UUID,
    key: str,
    fingerprint_hex: str,
    now: dt.datetime,
    effect: Callable[[AsyncSession], Awaitable[StoredResponse]],
) -> StoredResponse:
    try:
        inserted = await _claim(session, principal_id, key, fingerprint_hex, now)
    except DBAPIError as exc:
        if sqlstate(exc) != LOCK_NOT_AVAILABLE:
            raise
        # The first request with this key held it past our lock timeout: still running.
        raise IdempotencyKeyInUse("a request with this Idempotency-Key is still running") from exc
    if not inserted:
        return await _replay(session, principal_id, key, fingerprint_hex, now)
    savepoint = await session.begin_nested()
    try:
        response = await effect(session)
    except LedgerError as error:
        await savepoint.rollback()
        if error.status >= 500:
            raise
        response = StoredResponse(
            error.status, encode(error.problem()), False, "application/problem+json"
        )
    else:
        await savepoint.commit()
    await session.execute(
        sa.update(keys_t)
        .where(keys_t.c.principal_id == principal_id, keys_t.c.key == key)
        .values(status_code=response.status, response_body=_stored(response))
    )
    return response


async def _claim(
    session: AsyncSession, principal_id: uuid.UUID, key: str, fingerprint_hex: str, now: dt.datetime
) -> bool:
    """Insert the key row; False when it exists. A concurrent first request's uncommitted row
    makes this wait (up to the lock timeout) until that request commits or rolls back."""
    inserted = (
        await session.execute(
            pg_insert(keys_t)
            .values(
                principal_id=principal_id,
                key=key,
                fingerprint=fingerprint_hex,
                status_code=None,
                response_body=None,
                created_at=now,
            )
            .on_conflict_do_nothing()
            .returning(keys_t.c.key)
        )
    ).first()
    return inserted is not None


def _stored(response: StoredResponse) -> bytes:
    # The media type travels with the body: one byte of kind, then the exact bytes sent.
    kind = b"p" if response.media_type == "application/problem+json" else b"j"
    return kind + (response.body if response.stored_body is None else response.stored_body)


async def _replay(
    session: AsyncSession, principal_id: uuid.UUID, key: str, fingerprint_hex: str, now: dt.datetime
) -> StoredResponse:
    row = (
        await session.execute(
            sa.select(keys_t).where(keys_t.c.principal_id == principal_id, keys_t.c.key == key)
        )
    ).first()
    if row is None or row.status_code is None or row.response_body is None:
        # Only reachable if the first request's row vanished between our insert and select.
        raise IdempotencyKeyInUse("a request with this Idempotency-Key is still running")
    if row.fingerprint != fingerprint_hex:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")
    if row.created_at < now - dt.timedelta(seconds=limits.IDEMPOTENCY_KEY_TTL_SECONDS):
        raise IdempotencyKeyReused("this Idempotency-Key has expired; use a new key")
    body = bytes(row.response_body)
    media = "application/problem+json" if body[:1] == b"p" else "application/json"
    return StoredResponse(row.status_code, body[1:], True, media)
