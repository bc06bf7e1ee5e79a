"""Refused checkpoint rows a reader has already reported, so a flood of them is one report each."""

from __future__ import annotations

REMEMBERED_MAX = 10_000  # refused rows one reader remembers having reported


class ReportedOnce:
    """A bounded memory of refused checkpoint rows, keyed by (tree size, signature). Past the
    bound it starts over: a row may then be reported again, never left unreported."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[tuple[int, str]] = set()

    def first(self, tree_size: int, signature: str) -> bool:
        """True the first time this row is seen (since the memory last started over)."""
        key = (tree_size, signature)
        if key in self._seen:
            return False
        if len(self._seen) >= REMEMBERED_MAX:
            self._seen.clear()
        self._seen.add(key)
        return True
