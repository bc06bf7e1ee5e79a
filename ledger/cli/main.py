"""The `ledger` command. Settings are read here, once, when a command starts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from ledger.core.errors import ConfigurationError, LedgerError
from ledger.core.settings import Settings, load_settings
from observability.logging import configure_logging
from observability.tracing import configure_tracing

T = TypeVar("T")
log = structlog.get_logger("ledger.cli")

DEV_DATA_DIR = Path(".ledger")


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


# -- commands -------------------------------------------------------------------------------------


def cmd_db(args: argparse.Namespace) -> int:
    from ledger.core import migrate

    settings = _settings()
    url = settings.database_url or ""
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
    from ledger.posting.invariants import find_violations

    settings = _settings()
    violations = _run(lambda: _with_session(settings, find_violations))
    for line in violations:
        print(line)
    if not violations:
        print("ok: every ledger invariant holds", file=sys.stderr)
    return 1 if violations else 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Prints the report as one JSON line (as `GET /v1/audit/verify` answers); exit 1 if bad."""
    import msgspec

    from ledger.audit.service import verify

    settings = _settings()
    if args.checkpoints is not None:
        from ledger.cli.audit_cli import verify_with_checkpoints

        return _run(lambda: verify_with_checkpoints(settings, args, _with_session))
    report = _run(lambda: _with_session(settings, verify))
    print(msgspec.json.encode(report).decode(), flush=True)
    if report.ok:
        print(
            f"ok: {report.checked} sealed audit records verified, {report.unsealed} not sealed yet",
            file=sys.stderr,
        )
        return 0
    print(
        f"audit trail invalid at record {report.first_invalid_id}: {report.reason}",
        file=sys.stderr,
    )
    return 1


def cmd_audit_show(args: argparse.Namespace) -> int:
    """One object's audit history as a readable timeline (or JSON lines with --json)."""
    import msgspec

    from ledger.audit.service import object_history
    from ledger.audit.timeline import render

    settings = _settings()
    object_id = args.object.strip()
    records = _run(
        lambda: _with_session(
            settings, lambda s: object_history(s, object_id, reversal_of=_reversal_of)
        )
    )
    if args.json:
        for record in records:
            print(msgspec.json.encode(record).decode())
    else:
        print("\n".join(render(object_id, records)))
    return 0 if records else 1


async def _reversal_of(session: Any, transfer_id: uuid.UUID) -> uuid.UUID | None:
    """The transfer a reversal reverses (None for any other id): the audit trail sits below
    transfers, so `ledger audit show` looks this up for it."""
    from transfers.repository import get_transfer

    transfer = await get_transfer(session, transfer_id)
    return None if transfer is None else transfer.reversal_of


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


def _require_signing_key(settings: Settings) -> None:
    """`serve` and `worker` refuse to start without a usable audit checkpoint signing key."""
    from ledger.audit.signing import load_signer

    load_signer(settings.audit_signing_key)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from ledger.bench import BenchOptions, run_bench
    from ledger.core import limits

    settings = _settings(require_db=False)
    options = BenchOptions(
        url=args.url or f"http://{settings.host}:{settings.port}",
        key=args.key or settings.admin_key or "",
        accounts=args.accounts,
        clients=args.clients,
        duration_s=args.duration,
        hot=args.hot,
        batch=args.batch or 0,
        seed=args.seed,
        idempotency=args.idempotency,
        currency=args.currency,
        baseline=args.baseline,
        database_url=args.database_url or settings.database_url,
        progress=sys.stderr.isatty(),
        check_sample=(
            limits.BENCH_CHECK_TRANSFERS_DEFAULT if args.check_sample is None else args.check_sample
        ),
        api_pids=tuple(args.api_pid or ()),
        worker_pids=tuple(args.worker_pid or ()),
        db_pids=tuple(args.db_pid or ()),
    )
    report, problems = run_bench(options)
    for line in problems:
        print(f"bench: {line}", file=sys.stderr)
    print(json.dumps(report), flush=True)
    return 0


def _group_name(value: str) -> str:
    group = value.strip()
    if not (1 <= len(group) <= 255):
        raise ConfigurationError("--group must be 1..255 characters")
    return group


def cmd_consume(args: argparse.Namespace) -> int:
    """The reference consumer: a balances projection kept with the consumer kit until SIGTERM."""
    from outbox.consumer.kit import EventConsumer
    from outbox.service import project_balances

    settings = _settings()
    if settings.kafka_bootstrap_servers is None:
        raise ConfigurationError("LEDGER_KAFKA_BOOTSTRAP_SERVERS is not set: consume reads Kafka")
    group = _group_name(args.group)
    _serve_metrics(settings)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await EventConsumer(settings, group=group, handler=project_balances).run(stop)

    _run(main)
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare a consumer group's projection with the ledger: exit 1 with one line per account."""
    from ledger.posting.models import Account
    from outbox.service import reconcile

    settings = _settings()
    group = _group_name(args.group)
    # The outbox sits below the posting engine that owns the accounts table, so the table is
    # handed to it from here; the comparison stays one statement (one snapshot).
    accounts = Account.__table__
    lines = _run(
        lambda: _with_session(settings, lambda session: reconcile(session, group, accounts))
    )
    for line in lines:
        print(line)
    if not lines:
        print(f"ok: the projection of group {group} agrees with the ledger", file=sys.stderr)
    return 1 if lines else 0


def cmd_outbox_status(args: argparse.Namespace) -> int:
    """One JSON line: {"backlog", "oldest_age_seconds", "last_position"}."""
    import json

    from outbox.service import outbox_status

    settings = _settings()
    print(json.dumps(_run(lambda: _with_session(settings, outbox_status))), flush=True)
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
    verify.set_defaults(func=cmd_verify)

    bench = sub.add_parser("bench", help="load generator: funded accounts, concurrent transfers")
    bench.add_argument("--url", default=None, help="the API (default http://LEDGER_HOST:PORT)")
    bench.add_argument("--key", default=None, help="operator key (default LEDGER_ADMIN_KEY)")
    bench.add_argument("--accounts", type=int, default=1000)
    bench.add_argument("--clients", type=int, default=16)
    bench.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    bench.add_argument("--hot", action="store_true", help="every transfer pays one account")
    bench.add_argument("--batch", type=int, default=None, help="transfers per batch request")
    bench.add_argument("--seed", type=int, default=None)
    bench.add_argument("--idempotency", action="store_true", help="Idempotency-Key per request")
    bench.add_argument("--currency", default="USD")
    bench.add_argument("--baseline", action="store_true", help="also run pgbench, print ratios")
    bench.add_argument("--database-url", default=None, help="default LEDGER_DATABASE_URL")
    bench.add_argument(
        "--check-sample", type=int, default=None, help="acknowledged transfers re-read (1000)"
    )
    for component in ("api", "worker", "db"):  # CPU per transfer, children included
        bench.add_argument(
            f"--{component}-pid",
            type=int,
            action="append",
            help=f"a pid of the {component} (repeatable): report its CPU per transfer",
        )
    bench.set_defaults(func=cmd_bench)

    audit = sub.add_parser("audit", help="the audit trail: verify its hash chain, show a history")
    audit_sub = audit.add_subparsers(dest="action", required=True)
    audit_verify = audit_sub.add_parser(
        "verify", help="recompute the hash chain; exit 1 naming the first bad record"
    )
    audit_verify.set_defaults(func=cmd_audit_verify)
    from ledger.cli.audit_cli import add_commands, add_verify_options

    add_verify_options(audit_verify)
    add_commands(audit_sub)
    audit_show = audit_sub.add_parser("show", help="one account's or transfer's history")
    audit_show.add_argument("--object", required=True, help="account, transfer or API key id")
    audit_show.add_argument("--json", action="store_true", help="one JSON record per line")
    audit_show.set_defaults(func=cmd_audit_show)

    consume = sub.add_parser("consume", help="the reference event consumer (balances projection)")
    consume.add_argument("--group", required=True, help="Kafka consumer group and inbox scope")
    consume.set_defaults(func=cmd_consume)
    reconcile = sub.add_parser("reconcile", help="compare a consumer's projection with the ledger")
    reconcile.add_argument("--group", required=True)
    reconcile.set_defaults(func=cmd_reconcile)
    outbox = sub.add_parser("outbox", help="the transactional outbox")
    outbox_sub = outbox.add_subparsers(dest="action", required=True)
    outbox_status = outbox_sub.add_parser(
        "status", help="backlog, oldest unpublished age, position"
    )
    outbox_status.set_defaults(func=cmd_outbox_status)
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
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
