"""Identifiers: UUIDv7 made in the application (time-ordered, no round trip)."""

from __future__ import annotations

import uuid

from uuid_utils import compat


def new_id() -> uuid.UUID:
    return compat.uuid7()
