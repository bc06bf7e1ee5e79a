"""Several statements of one transaction in one round trip (psycopg pipeline mode).

Why: the posting engine runs the same few statements for every commit (lock the accounts, then
update them and insert transfers, entries, events and audit records). Sent one by one through
the ORM session, each cost a socket round trip and SQLAlchemy's per-statement bookkeeping, and
the profile of `POST /v1/transfers` was mostly that. Here the statements go to the session's own
connection, inside its transaction, queued and sent together; the server runs them in order and
stops at the first error, which rolls back with the transaction like any other statement.

Errors come back as SQLAlchemy `DBAPIError`s (what the rest of the code inspects for SQLSTATEs:
retryable, unavailable, lock timeouts). Each pipeline is one SQL span inside a trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from psycopg.pq import TransactionStatus
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from observability.tracing import ChildSpansOnly

Params = Sequence[Any] | Mapping[str, Any] | None
IDLE = TransactionStatus.IDLE

_tracer = ChildSpansOnly(trace.get_tracer("ledger.sql"))


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement in psycopg's placeholder style (`%s`, `%(name)s`)."""

    sql: str
    params: Params = None
    fetch: bool = False  # keep its rows (tuples in select-list order)


# Ends the transaction with the writes before it, in their round trip. Only the owner of a unit
# of work may send it, as its very last statement: the session's own commit then finds the
# transaction over and sends nothing (psycopg skips COMMIT on an idle connection).
COMMIT = Statement("COMMIT")


async def driver_connection(session: AsyncSession) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under the session, in the session's transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):
        raise TypeError("the ledger runs on psycopg's async connection")
    return driver


async def run(session: AsyncSession, wanted: Sequence[Statement | None]) -> list[list[Any] | None]:
    """Send the statements together and wait once. One answer per item, in order: the rows of
    a statement marked `fetch`, else None (and None for an item that is None: nothing to send,
    as when a builder had no ids to ask about)."""
    statements = [s for s in wanted if s is not None]
    if not statements:
        return [None] * len(wanted)
    answers = iter(await _send(session, statements))
    return [None if s is None else next(answers) for s in wanted]


async def _send(session: AsyncSession, statements: list[Statement]) -> list[list[Any] | None]:
    driver = await driver_connection(session)
    with _tracer.start_as_current_span(_span_name(statements), kind=SpanKind.CLIENT) as span:
        if span.is_recording():  # inside a trace only (ChildSpansOnly)
            span.set_attributes(
                {
                    "db.system": "postgresql",
                    "db.statement": ";\n".join(s.sql for s in statements),
                    "db.operation.batch.size": len(statements),
                }
            )
        with dbapi_errors(statements):
            # Alone in a transaction already begun, a pipeline would only add its sync; the first
            # statement of a transaction goes in one, so its BEGIN does not wait for an answer.
            if len(statements) == 1 and driver.info.transaction_status != IDLE:
                return [await _execute(driver, statements[0])]
            cursors = []
            async with driver.pipeline():
                for statement in statements:
                    cursor = driver.cursor()
                    await cursor.execute(statement.sql, statement.params)
                    cursors.append(cursor)
            results: list[list[Any] | None] = []
            for statement, cursor in zip(statements, cursors, strict=True):
                results.append(await cursor.fetchall() if statement.fetch else None)
                await cursor.close()
            return results
    raise RuntimeError("unreachable: the block returns or raises")  # pragma: no cover


async def _execute(driver: psycopg.AsyncConnection[Any], statement: Statement) -> list[Any] | None:
    async with driver.cursor() as cursor:
        await cursor.execute(statement.sql, statement.params)
        return await cursor.fetchall() if statement.fetch else None


@contextmanager
def dbapi_errors(statements: Sequence[Statement]) -> Iterator[None]:
    """psycopg errors as the SQLAlchemy errors the rest of the code inspects."""
    try:
        yield
    except psycopg.Error as exc:
        failed = ";\n".join(s.sql for s in statements)
        raise DBAPIError.instance(failed, None, exc, psycopg.Error) from exc


def _span_name(statements: Sequence[Statement]) -> str:
    """The operations in order, as the SQL span name: `SELECT`, `UPDATE INSERT INSERT ...`."""
    words: list[str] = []
    for statement in statements:
        word = statement.sql.lstrip().split(None, 1)[0].upper()
        if not words or words[-1] != word:
            words.append(word)
    return " ".join(words)
