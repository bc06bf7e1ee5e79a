"""What every `ledger` command shares: its settings (read once, when the command starts, with
logging and tracing set up from them), a one-off transaction, the admin key, /metrics for the
processes without the API, and stopping on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from ledger.core.errors import ConfigurationError
from ledger.core.settings import Settings, load_settings
from observability.logging import configure_logging
from observability.tracing import configure_tracing

T = TypeVar("T")
log = structlog.get_logger("ledger.cli")


def _settings(require_db: bool = True) -> Settings:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    # Every command's spans (the worker's relay, the consumer) go where OTEL_* says.
    configure_tracing()
    if require_db and settings.database_url is None:
        raise ConfigurationError("LEDGER_DATABASE_URL is not set (or use `ledger dev`)")
    return settings


def _serve_metrics(settings: Settings) -> None:
    """Processes without the API expose their own /metrics when LEDGER_METRICS_PORT is set."""
    if settings.metrics_port is None:
        return
    from observability.metrics import serve_metrics

    serve_metrics(settings.host, settings.metrics_port)
    log.info("metrics.serving", host=settings.host, port=settings.metrics_port)


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


async def _with_session(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from ledger.core.db import create_engine, create_sessionmaker, run_in_transaction

    engine = create_engine(settings, pool_size=1)
    try:
        return await run_in_transaction(create_sessionmaker(engine), work)
    finally:
        await engine.dispose()


async def ensure_admin_key(settings: Settings) -> None:
    if settings.admin_key is None:
        return
    from ledger.apikeys.service import ensure_key
    from ledger.core.context import Actor, WriteContext

    secret = settings.admin_key

    async def work(session: Any) -> None:
        await ensure_key(
            session, name="admin", role="admin", secret=secret, ctx=WriteContext(actor=Actor.cli())
        )

    await _with_session(settings, work)


def _require_signing_key(settings: Settings) -> None:
    """`serve` and `worker` refuse to start without a usable audit checkpoint signing key, or
    with a LEDGER_AUDIT_PUBLIC_KEYS file that is no public key (never a 500 later)."""
    from ledger.audit.keys import keyring
    from ledger.audit.signing import load_signer

    keyring(settings, load_signer(settings.audit_signing_key))


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
