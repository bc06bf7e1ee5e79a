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

# Rows a filtered page reads in id order before it asks the GIN index: this many per row it
# answers, and never fewer than the floor (a few thousand rows cost a few milliseconds).
WALK_ROWS_PER_ITEM = 32
WALK_ROWS_MIN = 4096


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

    Without filters: the plain `ORDER BY id LIMIT n`. With them, two ways to the page, each
    cheap where the other is not, in one statement:

    - *walk*: the rows in id order (the primary key), at most `WALK_ROWS_PER_ITEM * limit` of
      them (`WALK_ROWS_MIN` at least), tested against the filters until the page is full. A
      value that many rows carry fills the page here, however large the table: a filter
      matching half of it reads about `2 * limit` rows.
    - *seek*, only when the walk went through all its rows without filling the page: the
      matches after the walked rows are found alone through the GIN index (a MATERIALIZED CTE:
      containment, no ordering to tempt the planner into a primary-key walk that filters the
      whole table), then ordered and cut. Its cost follows the matches after the walk, 16 bytes
      each; the walk showed the filter matches fewer than one row in `WALK_ROWS_PER_ITEM` here.

    The seek is gated by a condition on the walk alone (a one-time filter on the read of its
    CTE: when false, the CTE never runs). The page is the walk's matches, then the seek's, cut
    to `limit` and joined back by primary key."""
    if not filters:
        return sa.select(*columns).where(*conditions).order_by(table.c.id).limit(limit)
    walk_rows = max(WALK_ROWS_MIN, WALK_ROWS_PER_ITEM * limit)
    walked = (
        sa.select(table.c.id, table.c.metadata)
        .where(*conditions)
        .order_by(table.c.id)
        .limit(walk_rows)
        .subquery("walked")
    )
    # A subquery, not a CTE: its order is the outer ORDER BY's, so the LIMIT stops the walk.
    near = (
        sa.select(walked.c.id)
        .where(*metadata_contains(walked.c.metadata, filters))
        .order_by(walked.c.id)
        .limit(limit)
        .cte("near")
        .prefix_with("MATERIALIZED")
    )
    near_count = sa.select(sa.func.count()).select_from(near).scalar_subquery()
    # The last walked row; NULL when fewer rows exist, and then nothing lies after the walk.
    walked_last = (
        sa.select(table.c.id)
        .where(*conditions)
        .order_by(table.c.id)
        .offset(walk_rows - 1)
        .limit(1)
        .scalar_subquery()
    )
    far = (
        sa.select(table.c.id)
        .where(
            table.c.id > walked_last,
            *conditions,
            *metadata_contains(table.c.metadata, filters),
        )
        .cte("far")
        .prefix_with("MATERIALIZED")
    )
    # The gate sits on the read of `far`, outside it: a CTE runs only when read, so neither its
    # scan nor the last walked row is computed when the walk filled the page (inside the CTE, a
    # parallel plan would compute both before it looked at the gate).
    seek = sa.select(far.c.id).where(near_count < limit)
    found = sa.union_all(sa.select(near.c.id), seek).subquery("found")
    page_ids = sa.select(found.c.id).order_by(found.c.id).limit(limit)
    return sa.select(*columns).where(table.c.id.in_(page_ids)).order_by(table.c.id)
