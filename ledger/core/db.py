"""Database plumbing: declarative base, engine, sessions and the retrying unit of work."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import MetaData, event
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
from sqlalchemy.pool import NullPool
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from ledger.core import limits, pipeline
from ledger.core.bulk import UNIT_WRITER
from ledger.core.dburl import DatabaseUrl
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
# A write refused as read-only: the service never writes in a read-only transaction, so the
# server it reached has become a standby (a demoted primary behind a pooler or a fixed address).
# No primary there: 503, and the pool's connections to it are dropped.
READ_ONLY_SQLSTATE = "25006"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        int: sa.BigInteger(),
        str: sa.Text(),
        uuid.UUID: UUID(as_uuid=True),
        dt.datetime: sa.DateTime(timezone=True),
        dict[str, Any]: JSONB(),
    }


def connection_defaults(application_name: str) -> dict[str, Any]:
    """libpq parameters of every connection the service opens, unless its URL sets them: a
    connect timeout per host tried, the name it shows in pg_stat_activity, and TCP keepalives,
    so that a connection to a host that vanished fails instead of waiting forever."""
    return {
        "connect_timeout": limits.DB_CONNECT_TIMEOUT_SECONDS,
        "application_name": application_name,
        "keepalives": 1,
        "keepalives_idle": limits.DB_TCP_KEEPALIVES_IDLE_SECONDS,
        "keepalives_interval": limits.DB_TCP_KEEPALIVES_INTERVAL_SECONDS,
        "keepalives_count": limits.DB_TCP_KEEPALIVES_COUNT,
        "tcp_user_timeout": limits.DB_TCP_USER_TIMEOUT_MS,
    }


def session_options(*extra: str) -> str:
    """The startup `options` of a direct connection: the request budget's lock and statement
    timeouts (contract 8.2: lock and pool waits are each bounded by REQUEST_WAIT_MAX_SECONDS, a
    statement by it plus time to work), and UTC; `extra` adds more `-c name=value` settings."""
    settings = [
        f"lock_timeout={limits.DB_LOCK_TIMEOUT_MS}",
        f"statement_timeout={limits.DB_STATEMENT_TIMEOUT_MS}",
        f"idle_in_transaction_session_timeout={limits.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS}",
        "timezone=UTC",
        *extra,
    ]
    return " ".join(f"-c {setting}" for setting in settings)


# Through a transaction-mode pooler the same settings go with each transaction (a session's
# would stay on a server connection other clients share next). SET, not set_config(): SET takes
# no snapshot, so a transaction may still choose its isolation level after it.
TRANSACTION_SETTINGS_SQL = (
    f"SET LOCAL lock_timeout = {limits.DB_LOCK_TIMEOUT_MS}; "
    f"SET LOCAL statement_timeout = {limits.DB_STATEMENT_TIMEOUT_MS}; "
    "SET LOCAL idle_in_transaction_session_timeout = "
    f"{limits.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS}; "
    "SET LOCAL timezone = 'UTC'"
)


def create_engine(
    settings: Settings,
    *,
    pool_size: int = limits.DB_POOL_SIZE,
    database: DatabaseUrl | None = None,
    pooled: bool | None = None,
) -> AsyncEngine:
    """The pooled engine of the request path and the jobs' own transactions, on
    LEDGER_DATABASE_URL (or `database`, e.g. the read URL).

    Behind a transaction-mode pooler (`pooled`, by default `settings.pooled`): no startup
    options (PgBouncer 1.18 refuses them) and no server-side prepared statements (a statement
    psycopg prepared on one server connection is unknown on the next, and one of the same name
    may exist there already); the timeouts are set at the start of each transaction instead."""
    url = settings.database if database is None else database
    pooled = settings.pooled if pooled is None else pooled
    defaults = connection_defaults("ledger")
    if not pooled:
        defaults["options"] = session_options()
    connect_args = url.connect_args(defaults)
    if pooled:
        connect_args["prepare_threshold"] = None
    engine = create_async_engine(
        url.sqlalchemy_url(),
        pool_size=pool_size,
        max_overflow=limits.DB_POOL_OVERFLOW,
        pool_timeout=limits.DB_POOL_TIMEOUT_SECONDS,
        # No pre-ping: it costs a round trip per transaction. A connection that died with the
        # server fails its request with 503 and invalidates the pool, so the next requests
        # reconnect by themselves (to the new primary, after a failover).
        pool_pre_ping=False,
        pool_recycle=1800,
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
    )
    if pooled:
        event.listen(engine.sync_engine, "begin", _set_transaction_settings)
    # SQL spans, children of the request's (or the consumer's) span: one trace end to end.
    tracing.instrument_engine(engine)
    return engine


def _set_transaction_settings(connection: sa.Connection) -> None:
    """Through a pooler, every transaction starts with the settings (one round trip, on the
    driver's cursor: no SQLAlchemy statement machinery, no SQL span); an autocommit connection
    (the outbox notifier's) has no transaction to set them in."""
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    cursor = connection.connection.cursor()
    try:
        cursor.execute(TRANSACTION_SETTINGS_SQL)
    finally:
        cursor.close()


def direct_engine(settings: Settings, application_name: str, *options: str) -> AsyncEngine:
    """An engine without a pool on LEDGER_DATABASE_DIRECT_URL, for one connection that holds
    session state (a leader's advisory lock): closing the connection ends the session, where a
    pool would hand it, lock and all, to the next borrower. `options`: more `-c` settings."""
    url = settings.direct_database
    defaults = connection_defaults(application_name) | {"options": session_options(*options)}
    return create_async_engine(
        url.sqlalchemy_url(),
        poolclass=NullPool,
        isolation_level="READ COMMITTED",
        connect_args=url.connect_args(defaults),
    )


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
        return state.startswith(UNAVAILABLE_SQLSTATE_PREFIXES) or state == READ_ONLY_SQLSTATE
    return False


def unreachable_database(exc: BaseException) -> str | None:
    """The driver's first line when `exc` is the database being away or refusing this client
    at connect (a command then says it in one line); None for any other failure."""
    if not is_unavailable(exc) and not _refused_at_connect(exc):
        return None
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def _refused_at_connect(exc: BaseException) -> bool:
    """Refused credentials or a database that does not exist (28xxx, 3D000)."""
    state = sqlstate(exc)
    return state is not None and (state.startswith("28") or state == "3D000")


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


async def _drop_pooled_connections(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Every pooled connection reaches the same server, now a standby: new ones go through
    libpq's host list again (`target_session_attrs`) to whichever host is the primary."""
    engine = sessionmaker.kw.get("bind")
    if isinstance(engine, AsyncEngine):
        await engine.dispose()


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
        if sqlstate(exc) == READ_ONLY_SQLSTATE:
            await _drop_pooled_connections(sessionmaker)
        if is_unavailable(exc):
            raise ServiceUnavailable() from exc
        raise
    raise RuntimeError("unreachable: tenacity either returns or raises")  # pragma: no cover
