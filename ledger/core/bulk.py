"""Bulk writes: each table's rows in one statement, and a transaction's statements sent together.

Why not executemany: psycopg runs it in pipeline mode, one statement per row, and for the
handful of rows a transfer writes that bookkeeping was a quarter of the API's CPU. An
`INSERT ... SELECT FROM json_populate_recordset(...)` has one fixed text per table (prepared
once per connection) whatever the number of rows, and its one parameter costs one encode.
Many rows go by COPY instead.

`BulkWriter` queues the statements of one unit of work and sends them in one round trip
(`ledger.pipeline`); a COPY, which cannot join a pipeline, first sends what is queued, so the
statements still reach the server in the order they were added.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core import pipeline
from ledger.core.pipeline import Statement

COPY_THRESHOLD_ROWS = 500  # from here on COPY is faster than one JSON statement


def _is_json(column: sa.Column[Any]) -> bool:
    return isinstance(column.type, sa.JSON)


def _is_binary(column: sa.Column[Any]) -> bool:
    return isinstance(column.type, sa.LargeBinary)


def _bytea_text(value: bytes | None) -> str | None:
    """bytea's hex input text: json_populate_recordset casts a JSON string to the column's type
    by its input function (msgspec alone would write base64, which bytea reads as text)."""
    return None if value is None else "\\x" + value.hex()


# `json`, not `jsonb`: the rows document is then never parsed into jsonb, so a `json` column (the
# outbox envelope) receives its value's exact text, numbers as msgspec wrote them; a jsonb
# column still parses its own value, as before.
@lru_cache(maxsize=64)
def _json_insert(table_name: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{name}"' for name in columns)
    return (
        f'INSERT INTO "{table_name}" ({names}) SELECT {names} '
        f'FROM json_populate_recordset(NULL::"{table_name}", %s::json)'
    )


def json_rows(rows: Sequence[Any]) -> str:
    """Rows as one JSON text: msgspec encodes it in one call (UUIDs, RFC 3339 times, exact
    integers) and PostgreSQL turns it into typed rows; no per-value array quoting."""
    return msgspec.json.encode(rows).decode()


UNIT_WRITER = "ledger.unit_writer"  # its key in the session's info


def unit_writer(session: AsyncSession) -> BulkWriter:
    """The writer of the session's unit of work: what it still holds when the work returns is
    sent by `run_in_transaction`, with the COMMIT in the same round trip when the unit of work
    asked for it (`pipelined_commit=True`)."""
    writer = session.info.get(UNIT_WRITER)
    if writer is None:
        writer = session.info[UNIT_WRITER] = BulkWriter(session)
    return cast(BulkWriter, writer)


class BulkWriter:
    """The writes of one unit of work, queued in order and sent together by `flush`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.statements: list[Statement] = []

    def add(self, statement: Statement | None) -> None:
        if statement is not None:
            self.statements.append(statement)

    async def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Queue `rows` (dicts with the same keys) for `table`; many rows are copied now."""
        if not rows:
            return
        columns = tuple(rows[0].keys())
        if len(rows) < COPY_THRESHOLD_ROWS:
            binary = [name for name in columns if _is_binary(table.c[name])]
            if binary:
                rows = [{**row, **{n: _bytea_text(row[n]) for n in binary}} for row in rows]
            self.add(Statement(_json_insert(table.name, columns), (json_rows(rows),)))
            return
        await self.flush()
        json_columns = {name for name in columns if _is_json(table.c[name])}
        await _copy(self.session, table, columns, json_columns, rows)

    async def flush(self, *, commit: bool = False) -> None:
        """Send what is queued; with `commit`, end the transaction in the same round trip.
        Only `run_in_transaction`, the owner of the unit of work, commits."""
        statements, self.statements = self.statements, []
        if commit:
            statements.append(pipeline.COMMIT)
        await pipeline.run(self.session, statements)


def _json_text(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


async def _copy(
    session: AsyncSession,
    table: sa.Table,
    columns: tuple[str, ...],
    json_columns: set[str],
    rows: Sequence[dict[str, Any]],
) -> None:
    driver = await pipeline.driver_connection(session)
    quoted = ", ".join(f'"{name}"' for name in columns)
    statement = f'COPY "{table.name}" ({quoted}) FROM STDIN'
    with pipeline.dbapi_errors([Statement(statement)]):
        async with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                await copy.write_row(
                    [
                        _json_text(row[name]) if name in json_columns else row[name]
                        for name in columns
                    ]
                )
