"""What one audit record changed, field by field, for the console's timelines.

Account updates keep `before` and `after` themselves. Transfers and accounts keep their state
after each change (`data.result`), so a change is the difference from the state the previous
record about the same object left; the first record shows what was created."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

# Fields that change with every write and say nothing a reviewer needs in a diff.
NOISE = frozenset({"updated_at", "created_at", "version", "id", "balances_after"})
VALUE_CHARS_MAX = 200

ChangeKind = Literal["added", "removed", "changed"]


@dataclass(frozen=True, slots=True)
class FieldChange:
    name: str
    before: str | None
    after: str | None
    kind: ChangeKind


@dataclass(frozen=True, slots=True)
class Change:
    summary: str
    fields: list[FieldChange] = field(default_factory=list)


def show(value: Any) -> str:
    """A value as a reviewer reads it: strings bare, anything else as compact JSON."""
    text = value if isinstance(value, str) else msgspec.json.encode(value, order="sorted").decode()
    return text if len(text) <= VALUE_CHARS_MAX else text[: VALUE_CHARS_MAX - 1] + "…"


def field_changes(before: dict[str, Any], after: dict[str, Any]) -> list[FieldChange]:
    changes = []
    for name in sorted(set(before) | set(after)):
        if name in NOISE:
            continue
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if name not in before or old is None:
            changes.append(FieldChange(name, None, show(new), "added"))
        elif name not in after or new is None:
            changes.append(FieldChange(name, show(old), None, "removed"))
        else:
            changes.append(FieldChange(name, show(old), show(new), "changed"))
    return changes


def _created(state: dict[str, Any]) -> list[FieldChange]:
    return [
        FieldChange(name, None, show(value), "added")
        for name, value in sorted(state.items())
        if name not in NOISE and value not in (None, {}, [])
    ]


def _own_state(data: dict[str, Any] | None, object_id: str) -> dict[str, Any] | None:
    """The object's state a record left, when its result is that object (a reverse's result is
    another transfer, the reversal)."""
    result = None if data is None else data.get("result")
    if isinstance(result, dict) and str(result.get("id", object_id)) == object_id:
        return result
    return None


def record_change(object_id: str, data: dict[str, Any], previous: dict[str, Any] | None) -> Change:
    """What a record about `object_id` changed; `previous` is the `data` of the record before it
    about the same object (None for the first)."""
    before, after = data.get("before"), data.get("after")
    if isinstance(before, dict) and isinstance(after, dict):
        return Change("updated", field_changes(before, after))
    result = data.get("result")
    if not isinstance(result, dict):
        return Change("recorded", [])
    if result.get("empty_cancel"):
        return Change("voided before it was ever created (empty cancel): the id is now refused")
    if str(result.get("id", object_id)) != object_id:
        reversed_total = data.get("reversed_amount")
        summary = f"reversed {show(result.get('amount'))} by transfer {result.get('id')}"
        if reversed_total is not None:
            summary += f" (reversed in total: {show(reversed_total)})"
        return Change(summary, [])
    prior = _own_state(previous, object_id)
    if prior is None:
        return Change("created", _created(result))
    changes = field_changes(prior, result)
    return Change("changed" if changes else "no field changed", changes)


def decode(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = msgspec.json.decode(text)
    return value if isinstance(value, dict) else None
