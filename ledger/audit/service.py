"""Audit decisions for reviewers: filter parsing, listing, one object's history, verification."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit import repository as repo
from ledger.audit.keys import Keyring
from ledger.audit.leaf import record_out
from ledger.audit.schemas import AuditRecordOut, AuditVerifyOut, VerifyProblem
from ledger.audit.verify import verify_chain
from ledger.core import limits
from ledger.core.errors import AuditVerifyBusy, ValidationFailed

ACTION_LENGTH_MAX = 64
ACTOR_NAME_LENGTH_MAX = limits.API_KEY_NAME_LENGTH_MAX
OBJECT_ID_LENGTH_MAX = 255
REQUEST_ID_LENGTH_MAX = 255

# Transfer id -> the id of the transfer it reverses (None when it is no reversal or unknown).
# Transfers sit above the audit trail, so the caller supplies the lookup.
ReversalLookup = Callable[[AsyncSession, uuid.UUID], Awaitable[uuid.UUID | None]]


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


def _bounded(value: str | None, field: str, length_max: int) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= length_max or "\x00" in value:
        raise _invalid(field, f"must be 1..{length_max} characters")
    return value


def record_filter(
    *,
    actor: str | None = None,
    object_id: str | None = None,
    action: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    request_id: str | None = None,
) -> repo.RecordFilter:
    """`actor` is an API key id (a UUID) or an actor name (a key's name, `cli`, `expiry`, ...).
    `start` and `end` are UTC already: the caller checks them as timestamp parameters
    (`ledger.http.params.utc`), a layer this package sits below."""
    actor = _bounded(actor, "actor", ACTOR_NAME_LENGTH_MAX)
    actor_id: uuid.UUID | None = None
    actor_name: str | None = None
    if actor is not None:
        try:
            actor_id = uuid.UUID(actor)
        except ValueError:
            actor_name = actor
    return repo.RecordFilter(
        actor_id=actor_id,
        actor_name=actor_name,
        object_id=_bounded(object_id, "object_id", OBJECT_ID_LENGTH_MAX),
        action=_bounded(action, "action", ACTION_LENGTH_MAX),
        request_id=_bounded(request_id, "request_id", REQUEST_ID_LENGTH_MAX),
        start=start,
        end=end,
    )


async def list_records(
    session: AsyncSession, where: repo.RecordFilter, *, after_seq: int | None, limit: int
) -> list[AuditRecordOut]:
    rows = await repo.list_records(session, where, after_seq=after_seq, limit=limit)
    return [record_out(r) for r in rows]


async def list_records_as_stored(
    session: AsyncSession, where: repo.RecordFilter, *, after_seq: int | None, limit: int
) -> list[tuple[AuditRecordOut, bytes]]:
    """`list_records`, each record with its `data` as stored: the text the trail answers, so
    that metadata numbers keep the text they were sent with."""
    rows = await repo.list_records(session, where, after_seq=after_seq, limit=limit, parsed=False)
    return [(record_out(r), r.data_as_stored.encode()) for r in rows]


async def object_history(
    session: AsyncSession,
    object_id: str,
    *,
    reversal_of: ReversalLookup,
    records_max: int = limits.AUDIT_SHOW_RECORDS_MAX,
) -> list[AuditRecordOut]:
    """Every record about one object, oldest first. A reversal transfer has no record of its own
    (the reverse is recorded on the original), so its history starts with that record."""
    where = record_filter(object_id=object_id)
    found: list[AuditRecordOut] = []
    after: int | None = None
    while len(found) < records_max:
        page_size = min(limits.LIST_LIMIT_MAX, records_max - len(found))
        page = await list_records(session, where, after_seq=after, limit=page_size)
        found.extend(page)
        if len(page) < page_size:
            break
        after = page[-1].seq
    origin = await _reversal_origin(session, object_id, reversal_of)
    if origin is not None:
        made = [record_out(r) for r in await repo.reversal_records(session, origin, object_id)]
        found = sorted([*made, *found], key=lambda r: r.seq)[:records_max]
    return found


async def _reversal_origin(
    session: AsyncSession, object_id: str, reversal_of: ReversalLookup
) -> str | None:
    try:
        transfer_id = uuid.UUID(object_id)
    except ValueError:
        return None
    origin = await reversal_of(session, transfer_id)
    return None if origin is None else str(origin)


class VerifyGate:
    """At most `running_max` verifications at once in one process. Its state is plain counting
    on the event loop, so checking and taking a place cannot interleave with another request."""

    def __init__(self, running_max: int = limits.AUDIT_VERIFY_RUNNING_MAX) -> None:
        self.running_max = running_max
        self.running = 0

    @contextlib.asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        if self.running >= self.running_max:
            raise AuditVerifyBusy(
                f"{self.running} audit verification(s) running in this process, at most "
                f"{self.running_max}; this one did not start"
            )
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1


async def verify(session: AsyncSession, keys: Keyring | None = None) -> AuditVerifyOut:
    report = await verify_chain(session, keys=keys)
    return AuditVerifyOut(
        problem=cast(VerifyProblem | None, report.problem),
        ok=report.ok,
        checked=report.checked,
        unsealed=report.unsealed,
        head_seq=report.head_seq,
        head_hash=report.head_hash,
        first_invalid_id=report.first_invalid_id,
        reason=report.reason,
    )
