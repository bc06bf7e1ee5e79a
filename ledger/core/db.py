"""Database plumbing: declarative base, engine, sessions and the retrying unit of work."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import MetaData
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from ledger.core import limits, pipeline
from ledger.core.bulk import UNIT_WRITER
from ledger.core.errors import InvariantViolation, ServiceUnavailable
from ledger.core.pipeline import IDLE
from ledger.core.settings import Settings
from observability import metrics, tracing

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected
UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "57P")  # connection exceptions, operator intervention


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        int: sa.BigInteger(),
        str: sa.Text(),
        uuid.UUID: UUID(as_uuid=True),
        dt.datetime: sa.DateTime(timezone=True),
        dict[str, Any]: JSONB(),
    }


def create_engine(settings: Settings, *, pool_size: int = limits.DB_POOL_SIZE) -> AsyncEngine:
    # Waiting for other requests is no refusal within REQUEST_WAIT_MAX_SECONDS (contract 8.2):
    # lock and pool waits are each bounded by that budget, a statement by it plus time to work.
    options = (
        f"-c lock_timeout={limits.DB_LOCK_TIMEOUT_MS} "
        f"-c statement_timeout={limits.DB_STATEMENT_TIMEOUT_MS} "
        f"-c idle_in_transaction_session_timeout={limits.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS} "
        "-c timezone=UTC"
    )
    engine = create_async_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size,
        max_overflow=limits.DB_POOL_OVERFLOW,
        pool_timeout=limits.DB_POOL_TIMEOUT_SECONDS,
        # No pre-ping: it costs a round trip per transaction. A connection that died with the
        # server fails its request with 503 and invalidates the pool, so the next requests
        # reconnect by themselves.
        pool_pre_ping=False,
        pool_recycle=1800,
        isolation_level="READ COMMITTED",
        connect_args={
            "options": options,
            "connect_timeout": limits.DB_CONNECT_TIMEOUT_SECONDS,
            "application_name": "ledger",
        },
    )
    # SQL spans, children of the request's (or the consumer's) span: one trace end to end.
    tracing.instrument_engine(engine)
    return engine


def create_sessionmaker(
    engine: AsyncEngine, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """`info` is copied into every session's `info` (e.g. the outbox notifier of the API)."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info)


def sqlstate(exc: BaseException) -> str | None:
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        state = getattr(orig, "sqlstate", None)
        return state if isinstance(state, str) else None
    return None


def is_retryable(exc: BaseException) -> bool:
    return sqlstate(exc) in RETRYABLE_SQLSTATES


def is_unavailable(exc: BaseException) -> bool:
    """True when the failure is the database being away, not the request being wrong."""
    if isinstance(exc, PoolTimeoutError | ConnectionError | OSError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        state = sqlstate(exc)
        if state is None:
            return isinstance(exc, OperationalError)
        return state.startswith(UNAVAILABLE_SQLSTATE_PREFIXES)
    return False


AFTER_COMMIT = "ledger.after_commit"


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` once this session's transaction has committed (never after a rollback or
    a retried attempt): for counters that must count only what really happened."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


async def _send_unit_writes(session: AsyncSession, *, commit: bool) -> None:
    writer = session.info.pop(UNIT_WRITER, None)
    if writer is not None:
        await writer.flush(commit=commit)
    elif commit:
        await pipeline.run(session, [pipeline.COMMIT])
    if commit and (await pipeline.driver_connection(session)).info.transaction_status != IDLE:
        # The COMMIT must have ended the transaction: `session.begin()` then finds the
        # connection idle, and psycopg sends no second COMMIT.
        raise InvariantViolation("the pipelined COMMIT left the transaction open")


def _count_retry(retry_state: Any) -> None:
    metrics.TX_RETRIES.inc()


async def run_in_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    pipelined_commit: bool = False,
) -> T:
    """One owner of the unit of work: run `work` in a transaction, commit once, roll back on error.

    What `work` leaves queued on the session's `unit_writer` is sent before the commit; with
    `pipelined_commit`, in the same round trip as the COMMIT (group commit's last step: its
    writes, stored responses and COMMIT go together).

    Serialization failures and deadlocks are retried with capped, jittered exponential backoff;
    a database that cannot be reached becomes `ServiceUnavailable` (503 with Retry-After).
    """
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_retryable),
        stop=stop_after_attempt(limits.TX_RETRY_ATTEMPTS_MAX),
        wait=wait_random_exponential(
            multiplier=limits.TX_RETRY_BACKOFF_INITIAL_MS / 1000,
            max=limits.TX_RETRY_BACKOFF_MAX_MS / 1000,
        ),
        before_sleep=_count_retry,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                async with sessionmaker() as session:
                    async with session.begin():
                        result = await work(session)
                        await _send_unit_writes(session, commit=pipelined_commit)
                    for callback in session.info.pop(AFTER_COMMIT, ()):
                        callback()
                    return result
    except Exception as exc:
        if isinstance(exc, PoolTimeoutError):
            # Every connection stayed busy for the whole wait budget: shed before it started.
            metrics.REQUESTS_SHED.labels(reason="pool_timeout").inc()
        if is_unavailable(exc):
            raise ServiceUnavailable() from exc
        raise
    raise RuntimeError("unreachable: tenacity either returns or raises")  # pragma: no cover
