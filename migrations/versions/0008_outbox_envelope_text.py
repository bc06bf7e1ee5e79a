"""outbox envelopes are kept as the exact text the writer encoded (json, not jsonb)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 22:00:00.000000

`jsonb` reprints numbers when it is read back (`1e23` became `1e+23`, `1e308` 309 digits), so an
event's metadata reached Kafka and the feed changed (contract 8.2). A `json` column keeps the
text it is given, and the relay and the feed now send it as stored, unparsed.

Rows written before this migration get the jsonb column's text (the text they were written with
is lost), with their top-level keys put back in the contract's order (jsonb kept its own order,
and the readers no longer reorder). The outbox holds only unpublished and recently published
rows (retention trims it), so the rewrite is small. The downgrade casts back to jsonb.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The contract's key order (outbox/writer.py::envelope writes them so), spelled out here: a
# migration must not change when the code does.
ENVELOPE_KEYS = (
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "sequence",
    "traceparent",
    "data",
)


def upgrade() -> None:
    op.execute("ALTER TABLE outbox_events ALTER COLUMN envelope TYPE json USING envelope::json")
    keys = ", ".join(f"'{key}'" for key in ENVELOPE_KEYS)
    # Unknown keys (none are written) would go after the known ones, by name.
    op.execute(
        f"""
        UPDATE outbox_events SET envelope = (
            SELECT ('{{' || string_agg(
                to_json(member.key)::text || ':' || member.value::text, ','
                ORDER BY coalesce(array_position(ARRAY[{keys}]::text[], member.key), 1000),
                         member.key
            ) || '}}')::json
            FROM json_each(outbox_events.envelope) AS member
        )
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE outbox_events ALTER COLUMN envelope TYPE jsonb USING envelope::jsonb")
