"""Outbox rows as tests read them straight from the table: the envelope of either column."""

from __future__ import annotations

import json
from typing import Any

from outbox.repository import stored_envelope

# The two envelope columns of an `outbox_events` row `e`, to select before other columns.
ENVELOPE_COLUMNS = "e.envelope::text, e.envelope_packed"


def envelope_text(text: str | None, packed: bytes | None) -> str:
    """The envelope's stored text, whichever column holds it."""
    return stored_envelope(text, None if packed is None else bytes(packed)).decode()


def envelope(text: str | None, packed: bytes | None) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(envelope_text(text, packed))
    return parsed
