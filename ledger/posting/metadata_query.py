"""The one SQL shape of a metadata filter, shared by the account and transfer lists.

`metadata @> CAST('{"KEY": "VALUE"}' AS jsonb)`: containment on the jsonb copy of the metadata,
which the GIN index `ix_<table>_metadata` (`jsonb_path_ops`, migration 0011_reporting) serves.
The pair is encoded by msgspec (one top-level member, a string value), so a key or value can only
ever be data, and the text form lets a test EXPLAIN the exact statement a list sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB


def metadata_contains(
    column: sa.ColumnElement[Any], filters: Sequence[tuple[str, str]]
) -> list[sa.ColumnElement[bool]]:
    """One containment condition per `(key, value)`: all must hold."""
    return [
        column.op("@>")(sa.cast(sa.literal(msgspec.json.encode({key: value}).decode()), JSONB))
        for key, value in filters
    ]
