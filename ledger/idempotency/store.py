"""Idempotency-Key: the key row is inserted first, in the same transaction as the effect.

`INSERT ... ON CONFLICT DO NOTHING` makes "check, act, mark" one atomic step: a concurrent
duplicate blocks on the uncommitted key until the first request commits (it then replays the
stored response) or rolls back (it then proceeds as the first). Refusals (4xx) are stored and
replayed too; the business effect is rolled back to a savepoint, the key row is kept.

One store serves both request paths: `run_idempotent` (one request, one transaction) and group
commit (many requests, one transaction) claim keys with the same statement (`claim_many`), keep
responses with the same statement (`store_statement`) in the same encoding (`encode_stored`), and
replay them with `replay`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core import limits
from ledger.core.bulk import BulkWriter, json_rows
from ledger.core.db import sqlstate
from ledger.core.errors import (
    PROBLEM_MEDIA_TYPE,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    LedgerError,
    ValidationFailed,
)
from ledger.core.pipeline import Statement
from ledger.idempotency.models import IdempotencyRecord

keys_t = cast(sa.Table, IdempotencyRecord.__table__)
LOCK_NOT_AVAILABLE = "55P03"
JSON_MEDIA_TYPE = "application/json"

# The stored body's first byte says its media type; the exact bytes sent follow.
_KIND_OF_MEDIA = {PROBLEM_MEDIA_TYPE: b"p", JSON_MEDIA_TYPE: b"j"}
_MEDIA_OF_KIND = {kind: media for media, kind in _KIND_OF_MEDIA.items()}


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
    media_type: str = JSON_MEDIA_TYPE
    # What the key row keeps when it must differ from what is sent now: an API key's secret is
    # shown once and stored only as a hash, so its replay carries no secret.
    stored_body: bytes | None = None

    @classmethod
    def of_error(cls, error: LedgerError) -> StoredResponse:
        """A refusal as the problem response it is answered (and replayed) with."""
        return cls(
            error.status, msgspec.json.encode(error.problem()), media_type=PROBLEM_MEDIA_TYPE
        )


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


def expired_before(now: dt.datetime) -> dt.datetime:
    """Keys created before this instant are past their life: new keys to a request, and the
    worker's to delete."""
    return now - dt.timedelta(seconds=limits.IDEMPOTENCY_KEY_TTL_SECONDS)


# -- claiming ------------------------------------------------------------------------------------


async def claim_many(
    session: AsyncSession, claims: Sequence[IdempotencyClaim | None], now: dt.datetime
) -> set[int]:
    """Insert the key rows of `claims` (None: a request without a key) in one statement, in key
    order, so two transactions never wait on each other's keys in a cycle. Returns the indexes
    whose key was there already, or repeated earlier in `claims`: those are not this
    transaction's to run. A key held by a running request past the lock timeout raises
    `IdempotencyKeyInUse`; nothing of this transaction may go on then."""
    first_of: dict[tuple[uuid.UUID, str], int] = {}
    taken: set[int] = set()
    for index, claim in enumerate(claims):
        if claim is None:
            continue
        pair = (claim.principal_id, claim.key)
        if pair in first_of:
            taken.add(index)
        else:
            first_of[pair] = index
    if not first_of:
        return taken
    rows = [
        {
            "principal_id": pair[0],
            "key": pair[1],
            "fingerprint": cast(IdempotencyClaim, claims[index]).fingerprint,
            "status_code": None,
            "response_body": None,
            "created_at": now,
        }
        for pair, index in sorted(first_of.items(), key=lambda item: (str(item[0][0]), item[0][1]))
    ]
    statement = pg_insert(keys_t).values(rows)
    # A key past its life is a new key: its row is taken over as if it were inserted now. A
    # live key is left alone (DO UPDATE ... WHERE matches nothing), and its request replays.
    # Two requests racing for one expired key: the second waits on the first's row lock, then
    # finds it live, and replays the first's answer.
    statement = statement.on_conflict_do_update(
        index_elements=[keys_t.c.principal_id, keys_t.c.key],
        set_={
            "fingerprint": statement.excluded.fingerprint,
            "status_code": None,
            "response_body": None,
            "created_at": statement.excluded.created_at,
        },
        where=keys_t.c.created_at < expired_before(now),
    )
    try:
        inserted = await session.execute(statement.returning(keys_t.c.principal_id, keys_t.c.key))
    except DBAPIError as exc:
        if sqlstate(exc) != LOCK_NOT_AVAILABLE:
            raise
        # The first request with one of these keys held it past our lock timeout: still running.
        raise IdempotencyKeyInUse("a request with this Idempotency-Key is still running") from exc
    won = {(row.principal_id, row.key) for row in inserted}
    taken.update(index for pair, index in first_of.items() if pair not in won)
    return taken


async def claim_one(session: AsyncSession, claim: IdempotencyClaim, now: dt.datetime) -> bool:
    """Insert one key row; False when it exists. A concurrent first request's uncommitted row
    makes this wait (up to the lock timeout) until that request commits or rolls back."""
    return not await claim_many(session, [claim], now)


# -- storing and replaying -----------------------------------------------------------------------


def encode_stored(response: StoredResponse) -> bytes:
    """What the key row keeps: one byte of media type, then the exact bytes sent (or, for an API
    key's creation, the body without its secret)."""
    body = response.body if response.stored_body is None else response.stored_body
    return _KIND_OF_MEDIA[response.media_type] + body


def decode_stored(status: int, stored: bytes) -> StoredResponse:
    return StoredResponse(status, stored[1:], True, _MEDIA_OF_KIND[stored[:1]])


_STORE_RESPONSES = f"""
    UPDATE "{keys_t.name}" AS k
       SET status_code = v.status_code, response_body = decode(v.response_body, 'base64')
      FROM jsonb_to_recordset(%s::jsonb)
           AS v(principal_id uuid, key text, status_code integer, response_body text)
     WHERE k.principal_id = v.principal_id AND k.key = v.key
"""


def store_statement(
    answered: Sequence[tuple[IdempotencyClaim, StoredResponse]],
) -> Statement | None:
    """One statement that keeps every claimed key's response (None when there is none)."""
    if not answered:
        return None
    rows = [
        {
            "principal_id": claim.principal_id,
            "key": claim.key,
            "status_code": response.status,
            "response_body": encode_stored(response),  # bytes: base64 in JSON
        }
        for claim, response in answered
    ]
    return Statement(_STORE_RESPONSES, (json_rows(rows),))


async def replay(
    session: AsyncSession, claim: IdempotencyClaim, now: dt.datetime
) -> StoredResponse:
    """The stored response of a key this request did not win, if it is this request's."""
    row = (
        await session.execute(
            sa.select(keys_t).where(
                keys_t.c.principal_id == claim.principal_id, keys_t.c.key == claim.key
            )
        )
    ).first()
    if row is None or row.status_code is None or row.response_body is None:
        # Only reachable if the first request's row vanished between our insert and select.
        raise IdempotencyKeyInUse("a request with this Idempotency-Key is still running")
    if row.fingerprint != claim.fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")
    return decode_stored(row.status_code, bytes(row.response_body))


# -- retention -----------------------------------------------------------------------------------


async def delete_expired(session: AsyncSession, now: dt.datetime, batch_max: int) -> int:
    """Delete up to `batch_max` keys past their life, oldest first; rows a running request has
    locked (taking over an expired key) are skipped, not waited for."""
    doomed = (
        sa.select(keys_t.c.principal_id, keys_t.c.key)
        .where(keys_t.c.created_at < expired_before(now))
        .order_by(keys_t.c.created_at)
        .limit(batch_max)
        .with_for_update(skip_locked=True)
        .cte("doomed")
    )
    deleted = await session.execute(
        sa.delete(keys_t)
        .where(
            sa.tuple_(keys_t.c.principal_id, keys_t.c.key).in_(
                sa.select(doomed.c.principal_id, doomed.c.key)
            )
        )
        .returning(keys_t.c.key)
    )
    return len(deleted.all())


# -- one request ---------------------------------------------------------------------------------


async def run_idempotent(
    session: AsyncSession,
    claim: IdempotencyClaim,
    *,
    now: dt.datetime,
    effect: Callable[[AsyncSession], Awaitable[StoredResponse]],
) -> StoredResponse:
    """Run `effect` once per key: claim, act under a savepoint, keep the response; or replay."""
    if not await claim_one(session, claim, now):
        return await replay(session, claim, now)
    savepoint = await session.begin_nested()
    try:
        response = await effect(session)
    except LedgerError as error:
        await savepoint.rollback()
        if error.status >= 500:
            raise
        response = StoredResponse.of_error(error)
    else:
        await savepoint.commit()
    writer = BulkWriter(session)
    writer.add(store_statement([(claim, response)]))
    await writer.flush()
    return response
