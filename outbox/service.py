"""Event decisions: the HTTP feed's paging rules, the outbox status, and the reference consumer
(`ledger consume`: a balances projection) with its reconciliation (`ledger reconcile`)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.core import limits
from ledger.core.errors import EventsExpired
from outbox import repository as repo
from outbox.consumer import inbox
from outbox.consumer.kit import Event, InvalidEvent

BALANCE_EVENT_TYPES = frozenset(
    {"ledger.account.created", "ledger.account.updated", "ledger.account.balance_changed"}
)
BALANCE_COMPONENTS = ("posted_debits", "posted_credits", "pending_debits", "pending_credits")


# -- the HTTP feed ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedPage:
    # Each envelope's stored bytes (the writer's text, in the contract's key order), sent
    # unparsed so that metadata numbers keep their text.
    envelopes: list[msgspec.Raw]
    last_position: int | None  # of the last envelope returned; None when the page is empty


async def read_feed(session: AsyncSession, *, after: int, limit: int) -> FeedPage:
    """Events after position `after`, in position order. A cursor whose next events were
    trimmed by retention is refused (410) rather than silently jumping over them."""
    rows = await repo.feed_page(session, after, limit)
    if after > 0 and (not rows or rows[0][0] != after + 1):
        first = await repo.first_retained_position(session)
        if first is not None and first > after + 1:
            raise EventsExpired(
                f"events {after + 1}..{first - 1} were trimmed by retention; "
                "start again without a cursor"
            )
    return FeedPage(
        envelopes=[msgspec.Raw(envelope) for _, envelope in rows],
        last_position=rows[-1][0] if rows else None,
    )


async def outbox_status(session: AsyncSession) -> dict[str, Any]:
    """For `ledger outbox status`: the same bounded read /metrics makes."""
    status = await repo.status(
        session,
        backlog_count_max=limits.OUTBOX_BACKLOG_COUNT_MAX,
        timeout_ms=limits.OUTBOX_STATUS_TIMEOUT_MS,
    )
    return {
        "backlog": status.backlog,
        "backlog_capped": status.backlog_capped,
        "oldest_age_seconds": round(status.oldest_age_seconds, 3),
        "last_position": status.last_position,
    }


# -- the reference consumer ------------------------------------------------------------------


def _balance_row(event: Event) -> inbox.BalanceRow:
    data = event.data
    try:
        account_id = uuid.UUID(str(data.get("account_id") or data["id"]))
        balances = data["balances"]
        components = {name: balances[name] for name in BALANCE_COMPONENTS}
        version = data["version"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"{event.type} without an account id, version or balances") from exc
    numbers = [version, *components.values()]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise InvalidEvent(f"{event.type} carries a non-integer version or balance")
    if str(account_id) != event.subject or event.sequence != version:
        raise InvalidEvent(f"{event.type}: subject or sequence disagree with the data")
    return inbox.BalanceRow(account_id=account_id, version=version, **components)


async def project_balances(session: AsyncSession, event: Event) -> None:
    """The handler of `ledger consume`: every account event carries the account's balances
    after the change, so the projection is the newest snapshot per account."""
    if event.type not in BALANCE_EVENT_TYPES:
        return
    row = _balance_row(event)
    await inbox.upsert_balance(session, event.group, row, dt.datetime.now(dt.UTC))


def _describe(row: inbox.BalanceRow | None) -> str:
    if row is None:
        return "absent"
    parts = [f"version={row.version}"]
    parts += [f"{name}={getattr(row, name)}" for name in BALANCE_COMPONENTS]
    return " ".join(parts)


async def reconcile(session: AsyncSession, group: str, ledger_accounts: sa.FromClause) -> list[str]:
    """One line per account where the projection of `group` differs from the ledger, whose
    accounts table the caller passes in (see `inbox.balance_differences`)."""
    return [
        f"account {d.account_id}: ledger {_describe(d.ledger)}; "
        f"projection {_describe(d.projection)}"
        for d in await inbox.balance_differences(session, group, ledger_accounts)
    ]
