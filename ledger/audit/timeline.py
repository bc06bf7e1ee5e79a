"""`ledger audit show`: one object's history as a timeline a person can read.

Each record becomes a header line (time, action, actor, request, trace) and one or more indented
lines saying what changed. Transfers and accounts store their state after each change
(`data.result`), so a change is the difference from the state the previous record left; account
updates store `before` and `after` themselves.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ledger.audit.chain import format_timestamp
from ledger.audit.schemas import AuditRecordOut

# Fields that change with every write and say nothing a reader needs in a diff.
_NOISE = frozenset({"updated_at", "created_at", "version", "balances", "id"})
_VALUE_CHARS_MAX = 120


def _text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        text = msgspec.json.encode(msgspec.to_builtins(value), order="sorted").decode()
    return text if len(text) <= _VALUE_CHARS_MAX else text[: _VALUE_CHARS_MAX - 3] + "..."


def _summary(state: dict[str, Any]) -> str:
    parts = [
        f"{key} {_text(value)}"
        for key, value in state.items()
        if key not in _NOISE and value not in (None, {}, [])
    ]
    return ", ".join(parts) or "(no fields)"


def _diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    lines = []
    for key in sorted(set(before) | set(after)):
        if key in _NOISE or before.get(key) == after.get(key):
            continue
        lines.append(f"{key}: {_text(before.get(key))} -> {_text(after.get(key))}")
    return lines


def _actor(record: AuditRecordOut) -> str:
    if record.actor.id is None:
        return record.actor.name
    return f"{record.actor.name} (key {record.actor.id})"


def _changes(
    record: AuditRecordOut, object_id: str, state: dict[str, Any] | None
) -> tuple[list[str], dict[str, Any] | None]:
    """What this record changed, and the object's state after it."""
    data = record.data
    result = data.get("result")
    if isinstance(data.get("before"), dict) and isinstance(data.get("after"), dict):
        after = {**(state or {}), **data["after"]}
        return _diff(data["before"], data["after"]), after
    if not isinstance(result, dict):
        return [f"data: {_text(data)}"], state
    if result.get("empty_cancel"):
        return ["voided before it was ever created (empty cancel): the id is now refused"], state
    if str(result.get("id", object_id)) != object_id:
        # A reverse, recorded on the original: the result is the new reversal transfer.
        return [
            f"reversed {_text(result.get('amount'))} by transfer {result.get('id')}"
            + (
                f" (reversed in total: {data['reversed_amount']})"
                if "reversed_amount" in data
                else ""
            )
        ], state
    if record.object_id != object_id:
        return [f"created by reversing transfer {record.object_id}: {_summary(result)}"], result
    if state is None:
        return [f"created: {_summary(result)}"], result
    return _diff(state, result) or ["no field changed"], result


def render(object_id: str, records: list[AuditRecordOut]) -> list[str]:
    if not records:
        return [f"no audit records for {object_id}"]
    kind = next((r.object_type for r in records if r.object_id == object_id), "object")
    lines = [f"{kind} {object_id}: {len(records)} audit record(s), oldest first", ""]
    state: dict[str, Any] | None = None
    for record in records:
        header = f"{format_timestamp(record.at)}  {record.action:<16}  by {_actor(record)}"
        if record.request_id:
            header += f"  request {record.request_id}"
        if record.trace_id:
            header += f"  trace {record.trace_id}"
        if record.client_addr:
            header += f"  from {record.client_addr}"
        lines.append(header)
        changed, state = _changes(record, object_id, state)
        lines.extend(f"    {line}" for line in changed)
        request = record.data.get("request")
        if isinstance(request, dict):
            asked = {k: v for k, v in request.items() if v not in (None, {}, [])}
            if asked:
                lines.append(f"    asked: {_text(asked)}")
    return lines
