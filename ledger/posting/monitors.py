"""Balance monitors, evaluated by the posting engine on locked balances: pure functions, no I/O.

A monitor fires when a change makes its condition true: false on the account's balances just
before the change, true just after. While the condition stays true, later changes do not fire
it again; once it turns false, the next change that makes it true fires it once more. Each
change of a transaction (a group-commit batch holds many) is judged on its own, in the order the
engine applies them, so a crossing inside a batch is seen even if a later item crosses back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import operator
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ledger.core.errors import InvariantViolation
from ledger.posting.state import AccountState

COMPARISONS: dict[str, Callable[[int, int], bool]] = {
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
}


@dataclass(slots=True)
class MonitorState:
    id: uuid.UUID
    account_id: uuid.UUID
    field: str  # "posted" or "available"
    operator: str  # "lt", "lte", "gt" or "gte"
    value: int
    trigger_count: int  # how many times it fired: its events' sequence
    created_at: dt.datetime
    changed: bool = dataclasses.field(default=False, compare=False)


def holds(monitor: MonitorState, account: AccountState) -> bool:
    """Is the monitor's condition true on the account's balances as they are now?"""
    if monitor.field == "posted":
        balance = account.posted
    elif monitor.field == "available":
        balance = account.available
    else:
        raise InvariantViolation(f"monitor {monitor.id} watches an unknown field {monitor.field}")
    compare = COMPARISONS.get(monitor.operator)
    if compare is None:
        raise InvariantViolation(f"monitor {monitor.id} has an unknown operator")
    return compare(balance, monitor.value)


Watched = list[tuple[AccountState, MonitorState, bool]]


def before_change(
    monitors: dict[uuid.UUID, list[MonitorState]], accounts: Iterable[AccountState]
) -> Watched:
    """Each monitor of these accounts with its condition before the change."""
    return [
        (account, monitor, holds(monitor, account))
        for account in accounts
        for monitor in monitors.get(account.id, ())
    ]


def fired(watched: Watched) -> list[tuple[AccountState, MonitorState]]:
    """The monitors whose condition the change made true; each counts one more firing."""
    result = []
    for account, monitor, held in watched:
        if not held and holds(monitor, account):
            monitor.trigger_count += 1
            monitor.changed = True
            result.append((account, monitor))
    return result
