"""The `ledger` command. Settings are read here, once, when a command starts.

This module holds the parser and the service's own commands (dev, serve, worker, db, keys,
verify); the shared helpers are in `common.py`, the `audit` commands in `audit_commands.py` (and
`audit_cli.py`), `bench` in `bench_command.py`, and consume, reconcile and outbox status in
`outbox_commands.py`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from ledger.cli.audit_commands import add_audit_parser
from ledger.cli.bench_command import add_bench_parser
from ledger.cli.common import (
    _require_signing_key,
    _run,
    _serve_metrics,
    _settings,
    _stop_on_signals,
    _with_session,
    ensure_admin_key,
)
from ledger.cli.outbox_commands import add_outbox_parsers
from ledger.core.db import unreachable_database
from ledger.core.errors import ConfigurationError, LedgerError

log = structlog.get_logger("ledger.cli")

DEV_DATA_DIR = Path(".ledger")

# Callers (`ledger dev`, the tests) have always found this here.
__all__ = ["DEV_DATA_DIR", "build_parser", "ensure_admin_key", "main"]


# -- commands -------------------------------------------------------------------------------------


def cmd_db(args: argparse.Namespace) -> int:
    from ledger.core import migrate

    settings = _settings()
    # Migrations hold their session (DDL, Alembic's version row): the direct URL, not a pooler.
    url = settings.database_direct_url or settings.database_url or ""
    if args.action == "upgrade":
        migrate.upgrade(url, args.revision or "head")
    elif args.action == "downgrade":
        if not args.revision:
            raise ConfigurationError("ledger db downgrade needs a revision (or base)")
        migrate.downgrade(url, args.revision)
    print(migrate.current_revision(url) or "base")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from ledger.apikeys.service import create_key
    from ledger.core.context import Actor, WriteContext
    from ledger.core.roles import ROLES

    if args.role not in ROLES:
        raise ConfigurationError(f"--role must be one of {', '.join(ROLES)}")
    if not (1 <= len(args.name) <= 128):
        raise ConfigurationError("--name must be 1..128 characters")
    settings = _settings()

    async def work(session: Any) -> str:
        _, secret = await create_key(
            session, name=args.name, role=args.role, ctx=WriteContext(actor=Actor.cli())
        )
        return secret

    print(_run(lambda: _with_session(settings, work)))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every invariant holds, 1 with one stdout line per violation (or per reason
    the run could not check); what was checked, and since when, goes to stderr."""
    from ledger.core.db import direct_engine
    from ledger.posting.verify_runs import verify_ledger

    settings = _settings()

    async def work() -> Any:
        # A session of its own: the verify lock is a session lock, and a pooler in transaction
        # mode would hand it to another client.
        engine = direct_engine(settings, "ledger-verify")
        try:
            return await verify_ledger(engine, since_last=args.since_last)
        finally:
            await engine.dispose()

    outcome = _run(work)
    for line in outcome.refusals + outcome.violations:
        print(line)
    for note in outcome.notes:
        print(note, file=sys.stderr)
    if outcome.ok:
        print("ok: every ledger invariant holds", file=sys.stderr)
    return 0 if outcome.ok else 1


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    _require_signing_key(settings)
    host = args.host or settings.host
    port = args.port or settings.port
    _run(lambda: ensure_admin_key(settings))
    if settings.kafka_bootstrap_servers is None:
        log.info("serve.kafka_disabled", detail="events stay in the outbox and the HTTP feed")
    os.environ["LEDGER_HOST"], os.environ["LEDGER_PORT"] = host, str(port)
    from observability.metrics import multiprocess_dir

    # With several worker processes /metrics must add up all of them: prometheus_client's
    # multiprocess mode, its directory set before the workers start.
    with multiprocess_dir(args.workers):
        uvicorn.run(
            "ledger.app:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=args.workers,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from ledger.worker.jobs import run_worker

    settings = _settings()
    _require_signing_key(settings)
    _serve_metrics(settings)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await ensure_admin_key(settings)
        await run_worker(settings, stop)

    _run(main)
    return 0


def cmd_webhook_delivery(args: argparse.Namespace) -> int:
    from ledger.worker.jobs import run_webhook_delivery

    if args.with_parent:
        # The worker's own settings, from its pipe; the series go to the worker's /metrics.
        from ledger.worker.webhook_process import read_parent_settings
        from observability.logging import configure_logging
        from observability.tracing import configure_tracing

        settings = read_parent_settings()
        configure_logging(settings.log_level, settings.log_format)
        configure_tracing()
    else:
        settings = _settings()
        _serve_metrics(settings)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await run_webhook_delivery(settings, stop, with_parent=args.with_parent)

    _run(main)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from ledger.cli.dev import run_dev

    return run_dev(DEV_DATA_DIR, port=args.port)


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger", description="Double-entry ledger service")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="embedded PostgreSQL and broker, migrations, API and workers")
    dev.add_argument("--port", type=int, default=None)
    dev.set_defaults(func=cmd_dev)

    serve = sub.add_parser("serve", help="the HTTP API")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="outbox relay, expiry of pending transfers, sealing")
    worker.set_defaults(func=cmd_worker)

    delivery = sub.add_parser(
        "webhook-delivery",
        help="webhook delivery alone (`ledger worker` runs it as its child; see docs/webhooks.md)",
    )
    # Set by `ledger worker` for its child: stop when stdin closes, metrics reported on stdout.
    delivery.add_argument("--with-parent", action="store_true", help=argparse.SUPPRESS)
    delivery.set_defaults(func=cmd_webhook_delivery)

    db = sub.add_parser("db", help="schema migrations (Alembic)")
    db_sub = db.add_subparsers(dest="action", required=True)
    for action in ("upgrade", "downgrade", "current"):
        p = db_sub.add_parser(action)
        if action != "current":
            p.add_argument("revision", nargs="?", default=None)
        p.set_defaults(func=cmd_db, revision=None)

    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="create a key; its secret is the only stdout line")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True)
    create.set_defaults(func=cmd_keys_create)

    verify = sub.add_parser("verify", help="check every ledger invariant in the database")
    verify.add_argument(
        "--since-last",
        action="store_true",
        help="check only what changed since the last recorded run (a full run when none is)",
    )
    verify.set_defaults(func=cmd_verify)

    add_bench_parser(sub)
    add_audit_parser(sub)
    add_outbox_parsers(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigurationError as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return 2
    except LedgerError as exc:  # e.g. the database is unreachable, or a bad argument value
        print(f"ledger: {exc.code}: {exc.detail}", file=sys.stderr)
        return 2
    except Exception as exc:
        # No primary to be found (all hosts down, or only standbys), refused credentials: one
        # line, as for any URL the command cannot use. Anything else is a bug: a traceback.
        reason = unreachable_database(exc)
        if reason is None:
            raise
        print(f"ledger: database_unavailable: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
