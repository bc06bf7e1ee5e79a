"""The application factory: one place that wires settings, database, routes and plumbing."""

from __future__ import annotations

import gc
from typing import Any

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts.categories.controllers import CategoryController
from accounts.controllers import AccountController
from accounts.monitor_controllers import MonitorController
from accounts.reports.controllers import ReportController
from ledger.api.asyncapi import asyncapi_document
from ledger.api.audit import AuditController
from ledger.api.audit_proofs import AuditProofController
from ledger.api.events import EventController
from ledger.api.period_lock import PeriodLockController
from ledger.api.system import health, metrics_endpoint, ready
from ledger.api.webhook_document import webhooks_section
from ledger.apikeys.controllers import ApiKeyController
from ledger.apikeys.service import authenticate
from ledger.console.mount import console
from ledger.core import limits
from ledger.core.db import create_engine, create_sessionmaker
from ledger.core.errors import LedgerError
from ledger.core.replica import ReadReplica
from ledger.core.settings import Settings
from ledger.http.allow import allow_every_method
from ledger.http.bodies import StrictBody, StrictSchemaPlugin, handle_body_exception
from ledger.http.openapi import ContractJsonPlugin, schema_not_found_as_problem
from ledger.http.problems import handle_ledger_error, handle_unexpected
from ledger.http.state import Services
from ledger.webhooks.controllers import POLICY_KEY, WebhookController
from ledger.webhooks.service import WebhookPolicy
from observability.middleware import telemetry_config
from observability.tracing import configure_tracing
from outbox.notifier import NOTIFIER_SESSION_KEY, OutboxNotifier
from transfers.controllers import TransferController
from transfers.exchange_controller import ExchangeController
from transfers.group_commit import GroupCommitter, install_group_commit


def create_app(settings: Settings, *, extra_route_handlers: list[Any] | None = None) -> Litestar:
    configure_tracing()
    engine = create_engine(settings)
    notifier = OutboxNotifier(engine)
    sessionmaker = create_sessionmaker(engine, info={NOTIFIER_SESSION_KEY: notifier})
    services = Services(settings=settings, sessionmaker=sessionmaker, authenticate=authenticate)
    read_engine = _read_replica(settings, services)
    if settings.group_commit:
        install_group_commit(services, GroupCommitter(sessionmaker))
    services.extensions[POLICY_KEY] = WebhookPolicy.of(settings)

    # The auditor console under /console: its own router, sessions and CSRF (ledger/console/).
    web_console = console(services)

    async def dispose_engine() -> None:
        await notifier.close()
        await engine.dispose()
        if read_engine is not None:
            await read_engine.dispose()

    return Litestar(
        route_handlers=[
            health,
            ready,
            metrics_endpoint,
            asyncapi_document,
            AccountController,
            TransferController,
            ExchangeController,  # money movement
            MonitorController,  # money movement
            PeriodLockController,  # money movement
            ApiKeyController,
            EventController,
            AuditController,
            *web_console.routers,
            CategoryController,
            ReportController,
            AuditProofController,
            WebhookController,
            *(extra_route_handlers or []),
        ],
        template_config=web_console.template_config,
        stores=web_console.stores,
        # `close`: what on_shutdown runs, for hosts that run no lifespan (tests' ASGI transport).
        state=State({"services": services, "engine": engine, "close": dispose_engine}),
        # Outermost: the server span, then request ids, access line and duration histogram for
        # every response (unmatched routes too); see observability/middleware.py.
        # Then `Allow` on OPTIONS from the whole route (ledger/http/allow.py).
        middleware=[telemetry_config().middleware, allow_every_method],
        exception_handlers={
            LedgerError: handle_ledger_error,
            HTTPException: handle_body_exception,
            Exception: handle_unexpected,
        },
        openapi_config=OpenAPIConfig(
            title="Ledger",
            version="1.0.0",
            path="/schema",
            # The completed document (ledger/http/openapi.py); every unknown /schema/... path
            # is a problem 404, as everywhere else.
            render_plugins=[SwaggerRenderPlugin(), ContractJsonPlugin(webhooks_section)],
            openapi_router=Router(
                "/schema",
                route_handlers=[],
                include_in_schema=False,
                after_request=schema_not_found_as_problem,
            ),
        ),
        # Struct schemas as exact as their decoding: unknown fields refused, integer bounds.
        plugins=[StrictSchemaPlugin()],
        # Typed bodies (`data: SomeStruct`) decode strictly, as decode_body does.
        dto=StrictBody,
        return_dto=None,
        request_max_body_size=limits.REQUEST_BODY_BYTES_MAX,
        on_shutdown=[dispose_engine],
        logging_config=None,
        debug=False,
    )


def _read_replica(settings: Settings, services: Services) -> AsyncEngine | None:
    """LEDGER_DATABASE_READ_URL: reads that may lag go to its standby (ledger/core/replica.py).
    Its engine is a pooler's (no startup options, no prepares): the URL may name either."""
    database = settings.read_database
    if database is None:
        return None
    engine = create_engine(settings, database=database, pooled=True)
    services.replica = ReadReplica(services.sessionmaker, create_sessionmaker(engine))
    return engine


def create_app_from_env() -> Litestar:
    """Factory for `uvicorn --factory` in worker processes: settings from the environment."""
    from ledger.core.settings import load_settings
    from observability.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    tune_gc()
    return app


GC_GEN0_THRESHOLD = 50_000  # CPython's default is 2,000 allocations (700 before 3.13)


def tune_gc() -> None:
    """Fewer, cheaper garbage collections in a serving process.

    A 1,000-transfer batch allocates hundreds of thousands of objects that live until its
    response is sent; with the default thresholds CPython ran a collection every few hundred
    of them, each scanning everything alive, and a profile of `--batch 1000` put 15 % of the API
    process there. Objects made at start-up (modules, the app, routes) are frozen out of every
    future scan; the young generation is collected after 50,000 net allocations instead.
    Reference counting still frees almost everything at once; this only spaces out the cycle
    collector, and memory over a long run stays flat (docs/performance.md)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
