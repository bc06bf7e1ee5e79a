"""The event side of the `ledger` command: `consume` (the reference consumer), `reconcile` (a
consumer's projection against the ledger) and `outbox status`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ledger.cli.common import (
    _run,
    _serve_metrics,
    _settings,
    _stop_on_signals,
    _with_session,
)
from ledger.core.errors import ConfigurationError


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


def add_outbox_parsers(sub: Any) -> None:
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
