"""Roles of API keys and what each may do: the one list every layer checks against."""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["admin", "operator", "reader", "auditor"]
ROLES: tuple[Role, ...] = get_args(Role)

Permission = Literal["read", "write", "audit", "keys", "settings", "import", "webhooks"]

PERMISSIONS: dict[Permission, frozenset[Role]] = {
    "read": frozenset({"admin", "operator", "reader", "auditor"}),
    "write": frozenset({"admin", "operator"}),
    "audit": frozenset({"admin", "auditor"}),
    "keys": frozenset({"admin"}),
    # Money movement: the period lock, and transfers imported with an earlier `imported_at`.
    "settings": frozenset({"admin"}),
    "import": frozenset({"admin"}),
    # Webhook endpoints and their secrets, deliveries, replays (contract 9.2).
    "webhooks": frozenset({"admin"}),
}
