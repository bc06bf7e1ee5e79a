"""What a transfer stores once: outbox envelopes packed (ledger/core/packed.py, migration 0026)
and audit data as the writer's text alone (migration 0027), read back as the same bytes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.core.packed import PackedValueError, pack, unpack
from ledger.core.settings import Settings
from tests.audit_helpers import seal_all
from tests.helpers import funded_pair
from tests.stored_events import ENVELOPE_COLUMNS, envelope_text
from tests.test_metadata_exact import COPIED_TEXTS, copied_batch


@given(st.binary(max_size=4096))
def test_any_bytes_come_back_exactly(text: bytes) -> None:
    assert unpack(pack(text)) == text


@given(
    st.dictionaries(
        st.text(max_size=20),
        st.one_of(st.integers(), st.text(max_size=50), st.none(), st.booleans()),
        max_size=12,
    )
)
def test_any_json_comes_back_exactly(value: dict[str, Any]) -> None:
    text = json.dumps(value).encode()
    assert unpack(pack(text)) == text


@pytest.mark.parametrize(
    "broken",
    [
        b"",  # nothing
        bytes([0]) + pack(b"{}")[1:],  # a tag no dictionary has
        bytes([255]) + pack(b"{}")[1:],
        pack(b'{"a":' + b"1" * 300 + b"}")[:-3],  # cut short
        pack(b"{}") + b"\x00",  # bytes after the stream
        bytes([1]) + b"\xff\xff\xff\xff",  # not deflate
    ],
)
def test_a_broken_value_is_named(broken: bytes) -> None:
    with pytest.raises(PackedValueError):
        unpack(broken)


async def test_a_transfer_stores_each_envelope_packed_and_its_audit_data_once(
    client: httpx.AsyncClient, settings: Settings, sync_db: psycopg.Connection[Any]
) -> None:
    """Single requests (one JSON statement) and a 500-transfer batch (COPY) both store packed
    envelopes only, about a quarter of their text, that unpack to the envelope with the
    metadata's exact text; their audit records keep `data_text` only, and the chain verifies."""
    row = sync_db.execute(
        "SELECT coalesce(max(id), 0), (SELECT coalesce(max(seq), 0) FROM audit_records)"
        " FROM outbox_events"
    ).fetchone()
    assert row is not None
    events_before, records_before = row
    _source, a, b = await funded_pair(client, 10_000)
    await copied_batch(client, a["id"], b["id"])

    rows = sync_db.execute(
        f"SELECT {ENVELOPE_COLUMNS}, octet_length(e.envelope_packed) FROM outbox_events e"
        " WHERE e.id > %s ORDER BY e.id",
        (events_before,),
    ).fetchall()
    # Three accounts, the funding transfer, 500 transfers: each with its balance changes.
    assert len(rows) > 1500
    assert all(text is None and packed is not None for text, packed, _ in rows)
    unpacked = [envelope_text(text, packed) for text, packed, _ in rows]
    assert sum(size for *_, size in rows) < 0.35 * sum(len(e.encode()) for e in unpacked)
    envelopes = [json.loads(e) for e in unpacked]
    assert {e["specversion"] for e in envelopes} == {"1.0"}
    posted = [e for e in unpacked if '"type":"ledger.transfer.posted"' in e]
    for text in COPIED_TEXTS:
        assert sum(('"metadata":' + text.decode() + ",") in e for e in posted) == 1, text

    records = sync_db.execute(
        "SELECT count(*), count(data), count(data_text) FROM audit_records WHERE seq > %s",
        (records_before,),
    ).fetchone()
    assert records is not None
    assert records[0] > 0 and records[1] == 0 and records[2] == records[0]
    await seal_all(settings)
    verified = await client.get("/v1/audit/verify")
    assert verified.status_code == 200, verified.text
    assert verified.json()["ok"] is True, verified.text


async def test_a_row_with_neither_or_both_envelopes_is_refused(
    sync_db: psycopg.Connection[Any],
) -> None:
    insert = (
        "INSERT INTO outbox_events (event_id, type, subject, envelope, envelope_packed,"
        " created_at) VALUES (gen_random_uuid(), 'ledger.test', 's', %s, %s, now())"
    )
    for text, packed in ((None, None), ('{"a":1}', pack(b'{"a":1}'))):
        with pytest.raises(psycopg.errors.CheckViolation):
            sync_db.execute(insert, (text, packed))
    with pytest.raises(psycopg.errors.CheckViolation):
        sync_db.execute(
            "INSERT INTO audit_records (id, at, actor_name, action, object_type, object_id)"
            " VALUES (gen_random_uuid(), now(), 'x', 'account.update', 'account', 'x')"
        )
