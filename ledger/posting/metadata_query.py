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


def page_query(
    table: sa.Table,
    columns: Sequence[sa.ColumnElement[Any]],
    conditions: Sequence[sa.ColumnElement[bool]],
    filters: Sequence[tuple[str, str]],
    limit: int,
) -> sa.Select[Any]:
    """One page of `table` by id, under `conditions` and the metadata `filters`.

    Without filters: the plain `ORDER BY id LIMIT n`. With them, the matching ids are found
    first, alone (a MATERIALIZED CTE: containment on the GIN index, no ordering to tempt the
    planner), and only then ordered, cut to the page and joined back by primary key. Left to
    itself, the planner often walks the primary key in order and filters every row until the
    page is full: for a rare value, a scan of the whole table. The cost here follows the
    number of matches instead, 16 bytes each."""
    if not filters:
        return sa.select(*columns).where(*conditions).order_by(table.c.id).limit(limit)
    matched = (
        sa.select(table.c.id)
        .where(*conditions, *metadata_contains(table.c.metadata, filters))
        .cte("matched")
        .prefix_with("MATERIALIZED")
    )
    page_ids = sa.select(matched.c.id).order_by(matched.c.id).limit(limit)
    return sa.select(*columns).where(table.c.id.in_(page_ids)).order_by(table.c.id)
