"""Bulk writes in one statement each: `unnest` of arrays for up to a few hundred rows, COPY for
more. Both stay inside the session's transaction.

Why not executemany: psycopg runs it in pipeline mode, one statement per row, and for the
handful of rows a transfer writes that bookkeeping was a quarter of the API's CPU. An
`INSERT ... SELECT FROM unnest(...)` has one fixed text per table (prepared once per
connection) whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import msgspec
import sqlalchemy as sa
from psycopg import AsyncConnection
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

COPY_THRESHOLD_ROWS = 500  # from here on COPY is faster than one unnest statement

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _is_json(column: sa.Column[Any]) -> bool:
    return isinstance(column.type, sa.JSON)


@lru_cache(maxsize=64)
def _unnest_insert(table: sa.Table, columns: tuple[str, ...]) -> sa.TextClause:
    names = ", ".join(f'"{name}"' for name in columns)
    arrays = []
    selected = []
    for index, name in enumerate(columns):
        column = table.c[name]
        if _is_json(column):
            arrays.append(f"CAST(:c{index} AS text[])")
            selected.append(f"c{index}::jsonb")
        else:
            arrays.append(f"CAST(:c{index} AS {column.type.compile(dialect=_DIALECT)}[])")
            selected.append(f"c{index}")
    aliases = ", ".join(f"c{index}" for index in range(len(columns)))
    return sa.text(
        f'INSERT INTO "{table.name}" ({names}) SELECT {", ".join(selected)} '
        f"FROM unnest({', '.join(arrays)}) AS t({aliases})"
    )


async def insert_rows(
    session: AsyncSession, table: sa.Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert `rows` (dicts with the same keys) into `table` in the session's transaction.
    JSON columns are encoded here, with msgspec."""
    if not rows:
        return
    columns = tuple(rows[0].keys())
    json_columns = {name for name in columns if _is_json(table.c[name])}
    if len(rows) >= COPY_THRESHOLD_ROWS:
        await _copy(session, table, columns, json_columns, rows)
        return
    params = {
        f"c{index}": [_json_text(row[name]) if name in json_columns else row[name] for row in rows]
        for index, name in enumerate(columns)
    }
    await session.execute(_unnest_insert(table, columns), params)


def _json_text(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


async def _copy(
    session: AsyncSession,
    table: sa.Table,
    columns: tuple[str, ...],
    json_columns: set[str],
    rows: Sequence[dict[str, Any]],
) -> None:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
    quoted = ", ".join(f'"{name}"' for name in columns)
    statement = f'COPY "{table.name}" ({quoted}) FROM STDIN'
    async with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            await copy.write_row(
                [_json_text(row[name]) if name in json_columns else row[name] for name in columns]
            )
