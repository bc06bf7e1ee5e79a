"""Audit records, appended in the business transaction. Never a secret in `data`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit.models import AuditRecord
from ledger.core.bulk import BulkWriter
from ledger.core.context import WriteContext
from ledger.core.ids import new_id


@dataclass(slots=True)
class AuditEntry:
    action: str
    object_type: str
    object_id: str
    data: dict[str, Any]
    # The request that made this write, when one transaction serves several (group commit).
    ctx: WriteContext | None = None


async def write_audit(session: AsyncSession, entries: list[AuditEntry], ctx: WriteContext) -> None:
    writer = BulkWriter(session)
    await add_audit(writer, entries, ctx)
    await writer.flush()


async def add_audit(writer: BulkWriter, entries: list[AuditEntry], ctx: WriteContext) -> None:
    """Queue the records on `writer` (sent with the rest of its unit of work)."""
    if not entries:
        return
    rows = []
    for entry in entries:
        entry_ctx = entry.ctx or ctx
        data = msgspec.Raw(msgspec.json.encode(entry.data))
        rows.append(
            {
                "id": new_id(),
                "at": entry_ctx.now,
                "actor_id": entry_ctx.actor.id,
                "actor_name": entry_ctx.actor.name,
                "action": entry.action,
                "object_type": entry.object_type,
                "object_id": entry.object_id,
                "request_id": entry_ctx.request_id,
                "trace_id": entry_ctx.trace_id,
                "client_addr": entry_ctx.client_addr,
                # Encoded once by msgspec and kept once, as text (what the trail answers); the
                # seal chain hashes it parsed as jsonb. `data` (jsonb) stays NULL: it held the
                # same value a second time (migration 0027_audit_one_copy).
                "data_text": data,
            }
        )
    # The Core table: ORM bulk inserts split rows by which columns are None. Many rows: COPY.
    await writer.insert(cast(sa.Table, AuditRecord.__table__), rows)
