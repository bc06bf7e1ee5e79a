"""`ledger audit verify` and `ledger audit show`, and the `audit` command's parser (its other
subcommands, and `verify --checkpoints`, are in `audit_cli.py`)."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

from ledger.cli.common import _run, _settings, _with_session


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Prints the report as one JSON line (as `GET /v1/audit/verify` answers); exit 1 if bad."""
    import msgspec

    from ledger.audit.keys import keyring
    from ledger.audit.service import verify

    settings = _settings()
    if args.checkpoints is not None:
        from ledger.cli.audit_cli import verify_with_checkpoints

        return _run(lambda: verify_with_checkpoints(settings, args, _with_session))
    keys = keyring(settings)
    held = keys if keys.keys else None  # none configured: the checkpoint rows go unchecked
    report = _run(lambda: _with_session(settings, lambda s: verify(s, held)))
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


def add_audit_parser(sub: Any) -> None:
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
