"""CSV export of an audit search: the same filters as the search page, streamed page by page
(each page its own short read transaction), oldest first, bounded in rows."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.audit import repository as audit_repo
from ledger.audit import service as audit
from ledger.audit.chain import format_timestamp
from ledger.audit.schemas import AuditRecordOut
from ledger.core import limits
from ledger.http.state import services_of

COLUMNS = (
    "seq",
    "id",
    "at",
    "actor_id",
    "actor_name",
    "action",
    "object_type",
    "object_id",
    "request_id",
    "trace_id",
    "client_addr",
    "data",
)
# A spreadsheet runs a cell that starts with one of these as a formula: such text cells get a
# leading apostrophe (OWASP's advice against CSV injection). `data` is JSON and starts with `{`.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str | None) -> str:
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _row(record: AuditRecordOut, data: bytes) -> list[str]:
    return [
        str(record.seq),
        str(record.id),
        format_timestamp(record.at),
        "" if record.actor.id is None else str(record.actor.id),
        _cell(record.actor.name),
        _cell(record.action),
        _cell(record.object_type),
        _cell(record.object_id),
        _cell(record.request_id),
        _cell(record.trace_id),
        _cell(record.client_addr),
        data.decode(),
    ]


def _lines(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


async def audit_csv(
    request: Request[Any, Any, Any], where: audit_repo.RecordFilter
) -> AsyncIterator[str]:
    """The header, then every matching record, one page per transaction. A record committed
    while the export runs appears when its seq is still ahead of the cursor."""
    services = services_of(request)
    yield _lines([list(COLUMNS)])
    after: int | None = None
    sent = 0
    while sent < limits.CONSOLE_EXPORT_ROWS_MAX:
        size = min(limits.CONSOLE_EXPORT_PAGE_SIZE, limits.CONSOLE_EXPORT_ROWS_MAX - sent)

        async def work(session: AsyncSession, after: int | None = after, size: int = size) -> Any:
            return await audit.list_records_as_stored(session, where, after_seq=after, limit=size)

        page: list[tuple[AuditRecordOut, bytes]] = await services.read(work)
        if not page:
            return
        yield _lines([_row(record, data) for record, data in page])
        sent += len(page)
        if len(page) < size:
            return
        after = page[-1][0].seq
