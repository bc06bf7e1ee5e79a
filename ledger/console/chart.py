"""The balance chart: an SVG step line of an account's posted balance after each entry, drawn
on the server from the statement. Coordinates are computed in integers (balances reach 2**63)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ledger.audit.chain import format_timestamp

WIDTH = 640
HEIGHT = 220
MARGIN_LEFT = 12
MARGIN_RIGHT = 12
MARGIN_TOP = 16
MARGIN_BOTTOM = 28


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    path: str  # the step line's `d`
    zero_y: int  # where balance 0 is drawn
    points: list[tuple[int, int]]  # one dot per entry
    low: int
    high: int
    first_at: str
    last_at: str
    first_balance: int
    last_balance: int
    count: int
    description: str


def _scale(value: int, low: int, high: int, size: int) -> int:
    return (value - low) * size // (high - low) if high != low else size // 2


def _micros(at: dt.datetime) -> int:
    delta = at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def balance_chart(entries: list[tuple[int, int, dt.datetime]], currency: str) -> Chart | None:
    """`entries` are (sequence, balance_after, posted_at), oldest first; None when empty."""
    if not entries:
        return None
    balances = [balance for _, balance, _ in entries]
    low, high = min(0, *balances), max(0, *balances)
    if low == high:
        high = low + 1
    times = [_micros(at) for _, _, at in entries]
    start, end = times[0], times[-1]
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def x_of(index: int) -> int:
        if end == start:  # all at one instant: spread by order
            return MARGIN_LEFT + _scale(index, 0, max(1, len(entries) - 1), plot_w)
        return MARGIN_LEFT + _scale(times[index], start, end, plot_w)

    def y_of(balance: int) -> int:
        return MARGIN_TOP + plot_h - _scale(balance, low, high, plot_h)

    points = [(x_of(i), y_of(b)) for i, b in enumerate(balances)]
    path = f"M {MARGIN_LEFT} {y_of(0)} H {points[0][0]} V {points[0][1]}"
    for px, py in points[1:]:
        path += f" H {px} V {py}"
    path += f" H {WIDTH - MARGIN_RIGHT}"
    first_at, last_at = format_timestamp(entries[0][2]), format_timestamp(entries[-1][2])
    description = (
        f"Posted balance in {currency} minor units after each of {len(entries)} entries, "
        f"from {first_at} to {last_at}: it starts at {balances[0]} and ends at {balances[-1]}; "
        f"lowest {min(balances)}, highest {max(balances)}."
    )
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        path=path,
        zero_y=y_of(0),
        points=points,
        low=min(balances),
        high=max(balances),
        first_at=first_at,
        last_at=last_at,
        first_balance=balances[0],
        last_balance=balances[-1],
        count=len(entries),
        description=description,
    )
